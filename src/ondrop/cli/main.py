"""The `ondrop` command: `up` runs the platform, every other command talks to it over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.text import Text

from ondrop.errors import ClientError, DefinitionError, OndropError
from ondrop.quantity import format_bytes
from ondrop.settings import Settings, env_name, help_for

# What one command alone needs is imported in it: every command starts in a blink.
if TYPE_CHECKING:
    from rich.progress import Progress
    from rich.table import Table

    from ondrop.client import Client
    from ondrop.runtime.engine import Engine

app = typer.Typer(
    help="ondrop: drop a file, a job runs your script, the outputs are stored.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
# Text is printed as it is (a name or a pattern with square brackets included): colour
# only where a Text asks for it. Piped output is read by programs: never wrapped.
PIPED_WIDTH = 100_000  # a table as wide as its longest line, on one line each row
out = Console(markup=False, width=None if sys.stdout.isatty() else PIPED_WIDTH)
err = Console(stderr=True, markup=False, width=None if sys.stderr.isatty() else PIPED_WIDTH)


def _labelled(label: str, colour: str, text: str) -> Text:
    """`label: text`, the label in colour."""
    return Text.assemble((label, colour), f": {text}")


class Connection:
    def __init__(self) -> None:
        self.overrides: dict[str, Any] = {}
        self._client: Client | None = None

    def client(self) -> Client:
        # httpx's own command line (click, pygments, rich's progress) is nothing ours
        # uses: without it httpx loads in half the time (it is an optional extra, and
        # httpx stands in a stub when it cannot be imported).
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
        from ondrop.client import Client, connection

        if self._client is None:
            url, user, password = connection(Settings.load(self.overrides))
            self._client = Client(url, user, password)
        return self._client

    def data(self) -> Path:
        """The data folder this command was given (or the default)."""
        return Path(Settings.load(self.overrides).data)

    def credentials_hint(self) -> str:
        """Where the admin credentials this command sent came from, and what to do."""
        if self.overrides.get("admin_password"):
            where = "the --admin-password flag"
        elif os.environ.get(env_name("admin_password")):
            where = env_name("admin_password")
        else:
            settings = Settings.load(self.overrides)
            from ondrop.client import CREDENTIALS_FILE

            kept = Path(settings.data) / CREDENTIALS_FILE
            stored: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError):
                stored = dict(json.loads(kept.read_text()))
            if "password_from" in stored:
                return (
                    f"{kept} says the platform's password was given to it at start, not "
                    f"kept there: give it here too, with --admin-password or "
                    f"{env_name('admin_password')}"
                )
            asked = settings.admin_user
            if stored and asked and asked != stored.get("user", "admin"):
                return (
                    f"{kept} holds the password of {stored.get('user', 'admin')!r}, not of "
                    f"{asked!r}: give {asked!r}'s with --admin-password"
                )
            if not kept.exists():
                return (
                    f"no password was given (no --admin-password, no "
                    f"{env_name('admin_password')}, no {kept}): give the one `ondrop up` "
                    "printed, or name its data folder with --data"
                )
            where = str(kept)
        return (
            f"the password was taken from {where}: give the platform's with "
            f"--admin-password or {env_name('admin_password')} (`ondrop up` says at start "
            "where it keeps it), or name its data folder with --data"
        )


CONN = Connection()


def _version(asked: bool) -> None:
    if asked:
        import ondrop

        print(f"ondrop {ondrop.__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    url: str = typer.Option(None, "--url", help=help_for("url"), show_default=False),
    user: str = typer.Option(
        None, "--admin-user", "--user", help=help_for("admin_user"), show_default=False
    ),
    password: str = typer.Option(
        None,
        "--admin-password",
        "--password",
        help=help_for("admin_password"),
        show_default=False,
    ),
    data: Path = typer.Option(None, "--data", help=help_for("data"), show_default=False),
    version: bool = typer.Option(
        False,
        "--version",
        help="Print ondrop's version and exit.",
        callback=_version,
        is_eager=True,
    ),
) -> None:
    CONN.overrides = {"url": url, "admin_user": user, "admin_password": password, "data": data}


# -- the platform ------------------------------------------------------------------------
@app.command()
def up(
    data: Path = typer.Option(None, "--data", help=help_for("data"), show_default=False),
    host: str = typer.Option(None, help=help_for("host"), show_default=False),
    port: int = typer.Option(None, help=help_for("port"), show_default=False),
    admin_user: str = typer.Option(None, help=help_for("admin_user"), show_default=False),
    admin_password: str = typer.Option(None, help=help_for("admin_password"), show_default=False),
    concurrency: int = typer.Option(None, help=help_for("concurrency"), show_default=False),
    faas_concurrency: int = typer.Option(
        None, help=help_for("faas_concurrency"), show_default=False
    ),
    faas_max_timeout: float = typer.Option(
        None, help=help_for("faas_max_timeout"), show_default=False
    ),
    faas_max_memory: str = typer.Option(None, help=help_for("faas_max_memory"), show_default=False),
    batch_cpus: float = typer.Option(None, help=help_for("batch_cpus"), show_default=False),
    batch_memory: str = typer.Option(None, help=help_for("batch_memory"), show_default=False),
    gpus: str = typer.Option(None, help=help_for("gpus"), show_default=False),
    max_upload: str = typer.Option(None, help=help_for("max_upload"), show_default=False),
    grace: float = typer.Option(None, help=help_for("grace"), show_default=False),
    run_images_on_host: bool = typer.Option(
        None,
        "--run-images-on-host/--no-run-images-on-host",
        help=help_for("run_images_on_host"),
        show_default=False,
    ),
    container_engine: str = typer.Option(
        None, help=help_for("container_engine"), show_default=False
    ),
    oci_runtime: str = typer.Option(None, help=help_for("oci_runtime"), show_default=False),
    job_uids: str = typer.Option(None, help=help_for("job_uids"), show_default=False),
    pull: str = typer.Option(None, help=help_for("pull"), show_default=False),
    no_pull: bool = typer.Option(False, "--no-pull", hidden=True),  # --pull never, as before
    poll_interval: float = typer.Option(None, help=help_for("poll_interval"), show_default=False),
    object_store: str = typer.Option(None, help=help_for("object_store"), show_default=False),
    object_store_host: str = typer.Option(
        None, help=help_for("object_store_host"), show_default=False
    ),
    oidc_issuers: str = typer.Option(None, help=help_for("oidc_issuers"), show_default=False),
    oidc_audience: str = typer.Option(None, help=help_for("oidc_audience"), show_default=False),
    oidc_groups: str = typer.Option(None, help=help_for("oidc_groups"), show_default=False),
    quota: str = typer.Option(None, help=help_for("quota"), show_default=False),
    store: str = typer.Option(None, help=help_for("store"), show_default=False),
    shared_folder: str = typer.Option(None, help=help_for("shared_folder"), show_default=False),
    backend: str = typer.Option(None, help=help_for("backend"), show_default=False),
    faas_backend: str = typer.Option(None, help=help_for("faas_backend"), show_default=False),
    batch_backend: str = typer.Option(None, help=help_for("batch_backend"), show_default=False),
    ray_address: str = typer.Option(None, help=help_for("ray_address"), show_default=False),
    log_level: str = typer.Option(None, help=help_for("log_level"), show_default=False),
) -> None:
    """Start the platform in the foreground: API, workers and file watching.

    Ctrl-C stops it: running jobs get a grace period; a second Ctrl-C stops them now.

    Example: ondrop up --data ~/ondrop-data --port 8030
    """
    from ondrop.cli.up import serve

    overrides = dict(
        data=data or CONN.overrides.get("data"),
        host=host,
        port=port,
        admin_user=admin_user,
        admin_password=admin_password,
        concurrency=concurrency,
        grace=grace,
        run_images_on_host=run_images_on_host,
        container_engine=container_engine,
        oci_runtime=oci_runtime,
        job_uids=job_uids,
        pull="never" if no_pull else pull,
        poll_interval=poll_interval,
        object_store=object_store,
        object_store_host=object_store_host,
        oidc_issuers=oidc_issuers,
        oidc_audience=oidc_audience,
        oidc_groups=oidc_groups,
        quota=quota,
        store=store,
        shared_folder=shared_folder,
        backend=backend,
        faas_backend=faas_backend,
        batch_backend=batch_backend,
        ray_address=ray_address,
        log_level=log_level,
        max_upload=_size("--max-upload", max_upload),
        faas_concurrency=faas_concurrency,
        faas_max_timeout=faas_max_timeout,
        faas_max_memory=_size("--faas-max-memory", faas_max_memory),
        batch_cpus=batch_cpus,
        batch_memory=_size("--batch-memory", batch_memory),
        gpus=gpus,
    )
    serve(Settings.load(overrides))


# -- services ------------------------------------------------------------------------------
@app.command()
def apply(fdl: Path = typer.Argument(..., help="FDL file: OSCAR, SCAR or ondrop shape")) -> None:
    """Create or update the services defined in an FDL file.

    The file may be in OSCAR's, SCAR's or ondrop's shape; all its services are checked
    together, and none changes if one is wrong. Says for each what changed, and warns
    when one was applied from another file before. Files already in a new input path
    start no job (`ondrop reprocess` starts them).

    Example: ondrop apply examples/video-objects/video-objects.yaml
    """
    from ondrop.fdl.loader import load_file

    definition = load_file(fdl)
    for warning in definition.warnings:
        err.print(_labelled("warning", "yellow", warning), highlight=False)
    if definition.builds:
        engine = _engine()
        for name, build in definition.builds.items():
            with err.status(f"building {build.tag} for {name} with {engine.name}"):
                engine.build(build.context, build.tag, build.file)
            err.print(f"built {build.tag}")
    services = [s.model_dump(exclude={"token"}) for s in definition.services]
    result = CONN.client().apply(services, source=str(fdl.resolve()))
    for warning in result.get("warnings", []):
        if warning not in definition.warnings:
            err.print(_labelled("warning", "yellow", warning), highlight=False)
    changes = result.get("changes", {})
    for name in (s.name for s in definition.services):
        if name in result["created"]:
            out.print(f"created {name}")
        elif name in result["updated"]:
            out.print(f"updated {name}: {', '.join(changes.get(name, [])) or 'changed'}")
        else:
            out.print(f"unchanged {name}")
    for name, files in result.get("left_alone", {}).items():
        err.print(
            f"{name}: {files} file(s) already in its input path were left alone; "
            f"`ondrop reprocess {name}` starts a job for each"
        )


@app.command()
def reprocess(
    service: str = typer.Argument(..., help="service"),
    wait: bool = typer.Option(
        False, "--wait", help="then wait for the work they start, down the whole chain"
    ),
) -> None:
    """Start jobs for the files already in a service's input path.

    One job per file version its filters take that has none of this service yet, as
    SCAR's `scar run`: the files that were there when it was applied, or that a failed
    job's retry would not cover. Files that had a job are counted, not run again.

    Example: ondrop reprocess split --wait
    """
    client = CONN.client()
    answer = client.reprocess(service)
    started = [j["job"] for j in answer["jobs"]]
    for job in answer["jobs"]:
        out.print(f"{job['input']}  ({job['job']})")
    out.print(
        f"started {len(started)} job(s); {answer['already']} file(s) had a job of {service} already"
    )
    from ondrop.cli.follow import remember_put

    remember_put(CONN.data(), client.url, started)
    if wait:
        _wait_for(client, started)


@app.command("services")
def list_services() -> None:
    """List the services with their inputs, outputs and job counts.

    Example: ondrop services
    """
    client = CONN.client()
    table = _table("SERVICE", "MODE", "RUNTIME", "INPUT", "OUTPUT", "JOBS")
    for s in client.services():
        counts = client.status(s["name"])["jobs"]
        jobs = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "-"
        table.add_row(
            s["name"],
            s["mode"],
            s.get("runtime") or ("container" if s["image"] else "process"),
            _places(s["input"]),
            _places(s["output"]),
            jobs,
        )
    out.print(table)


@app.command()
def status() -> None:
    """Show the pools (capacity, what runs, what waits) and the jobs by status.

    With several control planes on one store, they are listed too.

    Example: ondrop status
    """
    client = CONN.client()
    answer = client.status()
    table = _table(
        "POOL", "CAPACITY", "FREE", "RUNNING", "QUEUED", title="pools", title_justify="left"
    )
    faas, batch = answer["pools"]["faas"], answer["pools"]["batch"]
    table.add_row(
        "faas",
        f"{faas['concurrency']} jobs, {faas['max_timeout']:g} s, {faas['max_memory']} each",
        f"{faas['concurrency'] - faas['running']} jobs",
        str(faas["running"]),
        str(faas["queued"]),
    )
    gpus = f", GPUs {','.join(batch['gpus'])}" if batch["gpus"] else ""
    free_gpus = f", GPUs {','.join(batch['free_gpus']) or 'none'}" if batch["gpus"] else ""
    table.add_row(
        "batch",
        f"{batch['cpus']:g} CPUs, {batch['memory']}{gpus}",
        f"{batch['free_cpus']:g} CPUs, {batch['free_memory']}{free_gpus}",
        str(batch["running"]),
        str(batch["queued"]),
    )
    out.print(table)
    running = _table("POOL", "SERVICE", "RUNNING", title="running", title_justify="left")
    for pool, services in answer["running"].items():
        for service, count in sorted(services.items()):
            running.add_row(pool, service, str(count))
    if running.row_count:
        out.print(running)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(answer["jobs"].items())) or "none"
    out.print(f"jobs: {counts}; platform limit {answer['workers']} at once")
    planes = answer.get("replicas", [])
    if len(planes) > 1:  # several control planes on one store: the pools above are this one's
        replicas = _table(
            "CONTROL PLANE",
            "ADDRESS",
            "UP SINCE",
            "LAST SEEN",
            title="control planes on the store",
            title_justify="left",
        )
        now = time.time()
        for plane in planes:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(plane["since"]))
            replicas.add_row(
                plane["id"], plane["address"], since, f"{max(0.0, now - plane['seen']):.0f} s ago"
            )
        out.print(replicas)


@app.command()
def token(service: str = typer.Argument(..., help="service")) -> None:
    """Print a service's token, which opens its /job and /run to a caller.

    The bearer token lets a caller invoke the service without the admin's credentials.

    Example: curl -H "Authorization: Bearer $(ondrop token hello)" URL/run/hello -d hi
    """
    found = CONN.client().service(service).get("token")
    if not found:
        raise ClientError(f"the platform gave no token for {service!r}", 404)
    print(found)


@app.command()
def rm(
    service: str = typer.Argument(..., help="service to remove"),
    yes: bool = typer.Option(False, "--yes", "-y", help="remove it even with work in flight"),
) -> None:
    """Remove a service and its jobs; its files stay.

    Asks first when jobs of it are queued or running (they are dropped, running ones
    stopped), unless --yes.

    Example: ondrop rm thumbnails --yes
    """
    client = CONN.client()
    counts = client.status(service)["jobs"]
    busy = counts.get("queued", 0) + counts.get("running", 0)
    if busy and not yes:
        what = f"{service} has {busy} job(s) queued or running"
        if not sys.stdin.isatty():
            raise DefinitionError(f"{what}: give --yes to remove it and drop them")
        if not typer.confirm(f"{what}; remove it and drop them?", default=False):
            raise typer.Exit(1)
    client.delete_service(service)
    out.print(f"removed {service}")


# -- files ----------------------------------------------------------------------------------
@app.command()
def put(
    args: list[str] = typer.Argument(..., help="SERVICE FILE... (or FILE... with --to)"),
    to: str = typer.Option(None, "--to", help="PROVIDER.ID/PATH to upload to instead"),
    wait: bool = typer.Option(
        False,
        "--wait",
        help="then wait for the work the files started, down the whole chain (a bar per "
        "stage); exit 1 if any of it failed",
    ),
) -> None:
    """Upload files to a service's input path (each starts a job), or anywhere with --to.

    Example: ondrop put split holiday.mp4 --wait

    Example: ondrop put --to minio.default/videos/in a.mp4 b.mp4
    """
    if not to and len(args) < 2:
        raise DefinitionError("give a service and at least one file: ondrop put SERVICE FILE...")
    files = args if to else args[1:]
    paths = [Path(f) for f in files]
    for path in paths:  # before asking the platform anything
        _check_upload(path)
    client = CONN.client()
    if to:
        provider, _, folder = to.partition("/")
    else:
        service = args[0]
        provider, folder = _place(client.service(service), "input", service)
    keys: dict[str, Path] = {}
    for path in paths:
        key = posixpath.join(folder, path.name) if folder else path.name
        if key in keys:
            raise DefinitionError(
                f"{keys[key]} and {path} would both be uploaded as {provider}/{key}: "
                "rename one, or upload them separately"
            )
        keys[key] = path
    total = sum(p.stat().st_size for p in paths)
    started: list[str] = []
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor
    from concurrent.futures import wait as first_of

    with _transfer_progress() as progress, ThreadPoolExecutor(PUT_AT_ONCE) as pool:
        task = progress.add_task("uploading", total=total)

        def told(path: Path, key: str, answer: dict[str, Any]) -> None:
            started.extend(j["job"] for j in answer["jobs"])
            jobs = ", ".join(j["job"] for j in answer["jobs"]) or f"no job: {answer['no_job']}"
            progress.console.print(f"{path.name} -> {provider}/{key}  ({jobs})", highlight=False)

        def moved(n: int) -> None:
            progress.advance(task, n)

        def send(batch: list[tuple[str, Path]]) -> None:
            if len(batch) == 1:  # a large file, or the only one
                ((key, path),) = batch
                told(path, key, client.upload(provider, key, path, moved))
                return
            answer = client.upload_many(provider, folder, [p for _, p in batch], moved)
            for (_, path), stored in zip(batch, answer["objects"], strict=True):
                told(path, stored["key"], stored)

        sending = [pool.submit(send, batch) for batch in _batches(keys)]
        try:
            done, _ = first_of(sending, return_when=FIRST_EXCEPTION)
        finally:  # after a failure or Ctrl-C no more are sent; those under way end first
            pool.shutdown(wait=True, cancel_futures=True)
        failed = next((f for f in done if f.exception() is not None), None)
    from ondrop.cli.follow import remember_put

    remember_put(CONN.data(), client.url, started)
    error = None if failed is None else failed.exception()
    if error is not None:
        raise error
    if wait:
        _wait_for(client, started)


def _wait_for(
    client: Client, jobs: list[str], service: str | None = None, timeout: float = 0
) -> None:
    """Follow the work `jobs` belong to until it has ended (`ondrop wait`); exit 1 when a
    job of it (of `service`, when given) failed."""
    from ondrop.cli.follow import follow, verdict

    if not jobs:
        out.print("no job started: nothing to wait for")
        return
    try:
        found = follow(client, jobs, err, timeout or None)
    except TimeoutError as exc:
        raise ClientError(str(exc), 408) from None
    code = verdict(found, out, err, service)
    if code:
        raise typer.Exit(code)


@app.command("ls")
def list_files(
    service: str = typer.Argument(..., help="service"),
    input: bool = typer.Option(False, "--input", help="list the input path, not the output"),
) -> None:
    """List the files in a service's output path (or its input path).

    Example: ondrop ls summary
    """
    client = CONN.client()
    provider, folder = _place(client.service(service), "input" if input else "output", service)
    table = _table("NAME", "SIZE", "MODIFIED")
    for obj in client.list_files(provider, folder):
        name = obj["key"][len(folder) + 1 :] if folder else obj["key"]
        table.add_row(
            name,
            format_bytes(obj["size"]),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(obj["modified"])),
        )
    out.print(f"{provider}/{folder}")
    out.print(table)


@app.command()
def get(
    service: str = typer.Argument(..., help="service"),
    names: list[str] = typer.Argument(None, help="files to download (default: all)"),
    output: Path = typer.Option(Path("."), "-o", "--output", help="folder to write into"),
    input: bool = typer.Option(False, "--input", help="from the input path, not the output"),
) -> None:
    """Download a service's outputs (or inputs).

    Each file appears under its name only once complete.

    Example: ondrop get summary -o results/
    """
    client = CONN.client()
    provider, folder = _place(client.service(service), "input" if input else "output", service)
    objects = client.list_files(provider, folder)
    relative = {(o["key"][len(folder) + 1 :] if folder else o["key"]): o for o in objects}
    wanted = names or sorted(relative)
    missing = [n for n in wanted if n not in relative]
    if missing:
        raise ClientError(f"not in {provider}/{folder}: {', '.join(missing)}", 404)
    with _transfer_progress() as progress:
        task = progress.add_task("downloading", total=sum(relative[n]["size"] for n in wanted))
        for name in wanted:
            dest = output / name
            client.download(
                provider, relative[name]["key"], dest, lambda n: progress.advance(task, n)
            )
            progress.console.print(f"{provider}/{relative[name]['key']} -> {dest}", highlight=False)


# -- jobs -------------------------------------------------------------------------------------
@app.command()
def run(
    service: str = typer.Argument(..., help="service"),
    input: Path = typer.Option(None, "--input", "-i", help="file to send as the input"),
    text: str = typer.Option(None, "--text", "-t", help="text to send as the input"),
    output: Path = typer.Option(None, "-o", "--output", help="where to save the result"),
    asynchronous: bool = typer.Option(False, "--async", help="start the job and return its id"),
) -> None:
    """Invoke a service over HTTP and print or save its result.

    Example: ondrop run hello --text world

    Example: ondrop run grayify --input cat.png -o gray.png
    """
    if (input is None) == (text is None):
        raise DefinitionError("give the input with exactly one of --input FILE or --text TEXT")
    if input is not None:
        _check_upload(input)
    data = input.read_bytes() if input is not None else text.encode()
    filename = input.name if input is not None else "event-file"
    client = CONN.client()
    if asynchronous:
        out.print(client.submit(service, data, filename))
        return
    result = client.run(service, data, filename)
    if result.kind == "zip":
        folder = output or Path(".")
        import zipfile
        from io import BytesIO

        with zipfile.ZipFile(BytesIO(result.data)) as archive:
            archive.extractall(folder)
            err.print(f"{len(archive.namelist())} outputs written to {folder}")
        return
    if output is not None:
        dest = output / (result.filename or "output") if output.is_dir() else output
        dest.write_bytes(result.data)
        err.print(f"output written to {dest}")
        return
    try:
        sys.stdout.write(result.data.decode("utf-8"))
        sys.stdout.flush()
    except UnicodeDecodeError:
        dest = Path(result.filename or "output")
        dest.write_bytes(result.data)
        err.print(f"binary output written to {dest}")


@app.command()
def jobs(
    service: str = typer.Argument(None, help="service (default: every service)"),
    status: str = typer.Option(
        None,
        help="only jobs with this status: Pending, Running, Succeeded, Failed, Cancelled or "
        "Refused (any case)",
    ),
    clear: bool = typer.Option(False, "--clear", help="remove the finished jobs from the list"),
    as_json: bool = typer.Option(False, "--json", help="a JSON list, for scripts"),
) -> None:
    """List jobs (a service's, or every service's), newest first.

    Each with its status, input, times, attempts, the node it ran on, exit code and
    reason.

    Example: ondrop jobs detect --status failed
    """
    client = CONN.client()
    if clear:
        if service is None:
            raise DefinitionError("name the service whose finished jobs to remove")
        client.delete_jobs(service, all=True)
        out.print(f"removed the finished jobs of {service}")
        return
    names = [service] if service is not None else [s["name"] for s in client.services()]
    found = [
        (name, job_id, job) for name in names for job_id, job in client.jobs(name, status).items()
    ]
    if service is None:  # newest first across services
        found.sort(key=lambda row: row[2]["created"], reverse=True)
    if as_json:
        print(
            json.dumps(
                [{"id": job_id, "service": name, **job} for name, job_id, job in found], indent=2
            )
        )
        return
    title = f"{service or 'every service'}: {len(found)} job(s)"
    table = _table(title=title, title_justify="left")
    table.add_column("JOB", overflow="fold")
    columns = ("STATUS", "INPUT", "CREATED", "DURATION", "TRIES", "NODE", "EXIT", "REASON")
    for column in ("SERVICE", *columns) if service is None else columns:
        table.add_column(column)
    for name, job_id, job in found:
        row = [
            _status(job["status"]),
            job.get("input") or "-",
            time.strftime("%H:%M:%S", time.localtime(job["created"])),
            f"{job['duration']:.3f} s" if job.get("duration") is not None else "-",
            str(job["attempts"]),
            job.get("node") or "-",  # where its latest attempt ran ("-": not known yet)
            "-" if job["exit_code"] is None else str(job["exit_code"]),
            job.get("reason") or "",
        ]
        table.add_row(job_id, *([name] if service is None else []), *row)
    out.print(table)


@app.command()
def retry(
    service: str = typer.Argument(..., help="service"),
    jobs: list[str] = typer.Argument(None, help="failed or cancelled jobs to run again"),
    failed: bool = typer.Option(False, "--failed", help="run every failed job again"),
) -> None:
    """Run failed (or cancelled) jobs again, after fixing what made them fail.

    Example: ondrop retry detect --failed
    """
    if bool(jobs) == failed:
        raise DefinitionError("name the jobs to run again, or give --failed for all of them")
    client = CONN.client()
    retried = (
        client.retry(service)
        if failed
        else [j for job in jobs for j in client.retry(service, _job_id(client, service, job))]
    )
    out.print(f"queued again: {len(retried)} job(s)")


@app.command()
def cancel(
    service: str = typer.Argument(..., help="service"),
    job: str = typer.Argument(..., help="job to cancel"),
) -> None:
    """Cancel a queued job, or stop a running one.

    Example: ondrop cancel detect 5f0c6c2e
    """
    client = CONN.client()
    job = _job_id(client, service, job)
    status = client.cancel(service, job)
    out.print(f"{job}: {'stopping' if status == 'Running' else status.lower()}")


@app.command()
def logs(
    service: str = typer.Argument(..., help="service"),
    job: str = typer.Argument(..., help="job id, or any part of it that starts one job's"),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="stream its output as it is printed, until it ends"
    ),
    timestamps: bool = typer.Option(
        False, "--timestamps", help="each attempt's times, and each line's as it was read"
    ),
) -> None:
    """Show a job's status and its script's output (stdout and stderr).

    A running job's output so far is shown too (when it runs on the platform's own
    machine; on a cluster, once its attempt ends).

    Example: ondrop logs detect 5f0c6c2e --follow
    """
    client = CONN.client()
    job = _job_id(client, service, job)
    _job_status(client, service, job)
    if follow:
        for text in client.follow_logs(service, job, timestamps):
            sys.stdout.write(text)
            sys.stdout.flush()
        _job_status(client, service, job)
        return
    sys.stdout.write(client.logs(service, job, timestamps))
    sys.stdout.flush()


def _job_status(client: Client, service: str, job: str) -> None:
    """`JOB: Status, N attempt(s), exit C, reason` on stderr."""
    detail = client.job(service, job)
    exit_code = detail["exit_code"]
    err.print(
        Text.assemble(
            f"{job}: ",
            _status(detail["status"]),
            f", {detail['attempts']} attempt(s)",
            f", exit {exit_code}" if exit_code is not None else "",
            f", {detail['reason']}" if detail.get("reason") else "",
        ),
        highlight=False,
    )


@app.command()
def wait(
    service: str = typer.Argument(
        None, help="judge this service's jobs (default: the work of the latest `ondrop put`)"
    ),
    timeout: float = typer.Option(0, help="give up after this many seconds (0: never)"),
) -> None:
    """Wait for work to end, down the whole chain, with a bar per stage.

    The work the latest `ondrop put` started; or, given a service, the work queued or
    running now of it and of the services that feed it (their outputs reach its input,
    or it collects them), and what that work starts. Exit 1 if a job of it (of that
    service) failed; older jobs are not judged.

    Example: ondrop put split holiday.mp4 && ondrop wait summary
    """
    client = CONN.client()
    if service is None:
        from ondrop.cli.follow import last_put

        jobs = last_put(CONN.data(), client.url)
    else:  # the work in flight that is, or can lead to, jobs of the service
        stages = [service, *client.status(service)["upstream"]]
        jobs = [
            job
            for name in stages
            for status in ("Pending", "Running")
            for job in client.jobs(name, status)
        ]
        if not jobs:
            out.print(
                f"no job of {service} (or of what feeds it) is queued or running: nothing "
                "to wait for (work that ended before is not judged; `ondrop put --wait` "
                "follows what a put starts)"
            )
            return
    _wait_for(client, jobs, service, timeout)


# -- images ---------------------------------------------------------------------------------
image_app = typer.Typer(
    help="Build or import container images into the local engine.", no_args_is_help=True
)
app.add_typer(image_app, name="image")


@image_app.command("build")
def image_build(
    context: Path = typer.Argument(Path("."), help="folder with a Containerfile or Dockerfile"),
    tag: str = typer.Option(..., "-t", "--tag", help="name for the image, e.g. localhost/wc:1"),
    file: Path = typer.Option(
        None, "-f", "--file", help="the Containerfile (default: in the folder)"
    ),
) -> None:
    """Build an image with the local engine (podman or docker).

    Example: ondrop image build ./myimage -t localhost/myimage:1
    """
    engine = _engine()
    with err.status(f"building {tag} with {engine.name}"):
        image = engine.build(context, tag, file)
    out.print(f"built {tag} ({image.id[:12]})")


@image_app.command("import")
def image_import(
    tarball: Path = typer.Argument(..., help="a root filesystem as a tar file"),
    tag: str = typer.Argument(..., help="name for the image, e.g. localhost/tools:1"),
) -> None:
    """Import a root filesystem tarball as an image (no registry needed).

    Example: ondrop image import rootfs.tar localhost/tools:1
    """
    if not tarball.is_file():
        raise DefinitionError(f"{tarball}: no such file")
    engine = _engine()
    with err.status(f"importing {tarball} as {tag}"):
        image = engine.import_rootfs(tarball, tag)
    out.print(f"imported {tag} ({image.id[:12]})")


@image_app.command("busybox")
def image_busybox(
    tag: str = typer.Argument("localhost/busybox:latest", help="name for the image"),
) -> None:
    """Make a small busybox image from this machine's static busybox (offline).

    Example: ondrop image busybox
    """
    import tempfile

    from ondrop.runtime.rootfs import busybox_rootfs

    engine = _engine()
    with tempfile.TemporaryDirectory() as scratch:
        tarball = busybox_rootfs(Path(scratch) / "rootfs.tar")
        with err.status(f"importing a busybox root filesystem as {tag}"):
            image = engine.import_rootfs(tarball, tag)
    out.print(f"imported {tag} ({image.id[:12]})")


# -- helpers ----------------------------------------------------------------------------------
def _engine() -> Engine:
    from ondrop.runtime.engine import detect

    engine = detect(Settings.load(CONN.overrides).container_engine)
    if engine is None:
        raise DefinitionError(
            "no container engine found: install podman (or docker) to build or import images"
        )
    return engine


def _size(flag: str, text: str | None) -> int | None:
    from ondrop.quantity import parse_bytes

    if not text:
        return None
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise DefinitionError(f"{flag}: {exc}") from None


def _place(service: dict[str, Any], which: str, name: str) -> tuple[str, str]:
    entries = service.get(which) or []
    if not entries:
        hint = "; invoke it with `ondrop run`, or use --to" if which == "input" else ""
        raise ClientError(f"service {name!r} has no {which} path{hint}", 400)
    return entries[0]["storage_provider"], entries[0]["path"]


def _places(entries: list[dict[str, Any]]) -> str:
    return "\n".join(f"{e['storage_provider']}/{e['path']}" for e in entries) or "-"


def _status(status: str) -> Text:
    colour = {"Succeeded": "green", "Failed": "red", "Refused": "red", "Running": "cyan"}.get(
        status, "yellow"
    )
    return Text(status, style=colour)


UUID_LENGTH = 36  # a job id ends in one: `<service>-<uuid4>`
PUT_AT_ONCE = 4  # uploads `ondrop put` keeps under way, over kept-alive connections
BATCH_FILES = 100  # small files `ondrop put` sends in one request, at most
BATCH_BYTES = 32 << 20  # and their bytes
BATCH_FILE_MAX = 8 << 20  # a file this large is sent alone


def _job_id(client: Client, service: str, given: str) -> str:
    """The id of the one job of `service` that `given` names: the whole id, the id
    without the service's prefix (the bare UUID), or the start of either."""
    if not given.strip():
        raise DefinitionError("give a job id (or its start)")
    if len(given) > UUID_LENGTH and given[-UUID_LENGTH - 1] == "-":
        return given  # a whole id: the platform says if it has no such job
    ids = list(client.jobs(service))
    if given in ids:
        return given
    found = [j for j in ids if j.startswith(given) or j[-UUID_LENGTH:].startswith(given)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ClientError(f"no job of {service!r} starts with {given!r}", 404)
    shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
    raise ClientError(
        f"{given!r} starts {len(found)} jobs of {service!r} ({shown}): give more of the id", 409
    )


def _batches(keys: dict[str, Path]) -> list[list[tuple[str, Path]]]:
    """The uploads of `ondrop put`: small files together, up to BATCH_FILES or
    BATCH_BYTES in one request (a tar, its jobs recorded together); a large one alone."""
    batches: list[list[tuple[str, Path]]] = []
    batch: list[tuple[str, Path]] = []
    size = 0
    for key, path in keys.items():
        bytes_ = path.stat().st_size
        if bytes_ >= BATCH_FILE_MAX:
            batches.append([(key, path)])
            continue
        if batch and (len(batch) >= BATCH_FILES or size + bytes_ > BATCH_BYTES):
            batches.append(batch)
            batch, size = [], 0
        batch.append((key, path))
        size += bytes_
    if batch:
        batches.append(batch)
    return batches


def _check_upload(path: Path) -> None:
    """A file to send (`put`, `run --input`): one that exists and is a regular file, else
    an error saying what it is."""
    if not path.exists():
        raise DefinitionError(f"{path}: no such file")
    if path.is_dir():
        raise DefinitionError(f"{path} is a folder: give the files in it (for example {path}/*)")
    if not path.is_file():
        raise DefinitionError(
            f"{path} is not a regular file (a device, a pipe or a socket): only files are uploaded"
        )


def _table(*headers: str, **options: Any) -> Table:
    from rich.table import Table

    return Table(*headers, **options)


def _transfer_progress() -> Progress:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=True,
    )


def main() -> None:
    try:
        app(prog_name="ondrop")  # as `python -m ondrop` too: one completion script
    except OndropError as exc:
        text = str(exc)
        if isinstance(exc, ClientError) and exc.status_code == 401:  # it sent the admin's
            text += f"; {CONN.credentials_hint()}"
        err.print(_labelled("error", "red", text), highlight=False)
        sys.exit(1)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        err.print(_labelled("error", "red", f"{exc.strerror or exc}{where}"), highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
