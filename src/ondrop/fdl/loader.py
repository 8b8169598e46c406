"""Read an FDL file in any of its three shapes into `Service`s, with errors that say where.

Shapes: OSCAR's (`functions: oscar: - <cluster>: {...}`), SCAR's (`functions: aws:
- lambda: {...}`) and ondrop's own (`services: [...]`, or just a list). All three may
carry `storage_providers:` at the top.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import ValidationError

from ondrop.errors import DefinitionError
from ondrop.fdl import oscar, scar
from ondrop.fdl.models import Service, validate_providers
from ondrop.fdl.problems import Problem, Report, describe, is_unset

TOP_LEVEL = {"functions", "storage_providers", "clusters", "scar", "services"}


@dataclass
class Definition:
    """What one FDL file defines."""

    origin: str
    services: list[Service] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    builds: dict[str, Build] = field(default_factory=dict)  # service name -> its image build


@dataclass(frozen=True)
class Build:
    """`build:` of a service: make its image from a Containerfile before applying."""

    context: Path
    file: Path | None
    tag: str


def load_file(path: Path) -> Definition:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefinitionError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"{path}: cannot read it: {exc}") from None
    return load_text(text, str(path), path.parent)


class _NoAliases(yaml.SafeLoader):
    """YAML without aliases (`*name`): a few of them nested make an FDL of a few hundred
    bytes that takes gigabytes once read, which no one sending one over HTTP may do."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None,
                None,
                "an FDL sent over HTTP takes no aliases (*name)",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        return super().compose_node(parent, index)


def _yaml(text: str, origin: str, aliases: bool = True) -> Any:
    # Windows line ends and trailing tabs are common in published FDL files; neither matters.
    text = re.sub(r"[ \t]+$", "", text.replace("\r\n", "\n"), flags=re.MULTILINE)
    try:
        return yaml.load(text, Loader=yaml.SafeLoader if aliases else _NoAliases)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DefinitionError(f"{origin}: not valid YAML{where}: {problem}") from None


def load_text(text: str, origin: str, base: Path | Mapping[str, str]) -> Definition:
    """Parse FDL `text`; `origin` names it in messages. `base` is the folder script paths
    start from, or, for an FDL sent over HTTP, the scripts sent with it by file name (no
    file of this machine is ever read then, and nothing is built)."""
    data = _yaml(text, origin, aliases=isinstance(base, Path))
    # (shape, OSCAR cluster id, fields, report) of every service entry
    entries: list[tuple[str, str, dict[str, Any], Report]] = []
    if isinstance(data, list):
        data = {"services": data}
    if not isinstance(data, dict):
        raise DefinitionError(
            f"{origin}: expected an FDL mapping with `functions:` (OSCAR, SCAR) or "
            "`services:` (ondrop)"
        )
    unknown = sorted(set(map(str, data)) - TOP_LEVEL)
    if unknown:
        raise DefinitionError(
            f"{origin}: unknown top-level field {unknown[0]!r}; expected functions, services "
            "or storage_providers"
        )
    definition = Definition(origin)
    if not is_unset(data.get("clusters")):
        definition.warnings.append(f"{origin}: field 'clusters': other OSCAR clusters are ignored")
    try:
        providers = validate_providers(data.get("storage_providers"))
    except ValueError as exc:
        raise DefinitionError(f"{origin}: field 'storage_providers': {exc}") from None

    functions = data.get("functions") or {}
    if not isinstance(functions, dict):
        raise DefinitionError(f"{origin}: field 'functions': expected `oscar:` or `aws:` under it")
    for key in functions:
        if key not in {"oscar", "aws"}:
            raise DefinitionError(
                f"{origin}: field 'functions.{key}': unknown; expected oscar or aws"
            )
    for i, item in enumerate(_as_list(functions.get("oscar"), f"{origin}: functions.oscar")):
        if not isinstance(item, dict) or len(item) != 1:
            raise DefinitionError(
                f"{origin}: functions.oscar[{i}]: expected `<cluster-id>: {{service fields}}`"
            )
        ((cluster, service),) = item.items()
        where = f"{origin}: functions.oscar[{i}]"
        entries.append(("oscar", str(cluster), _mapping(service, where), Report()))
    for i, item in enumerate(_as_list(functions.get("aws"), f"{origin}: functions.aws")):
        entries.append(("scar", "", _mapping(item, f"{origin}: functions.aws[{i}]"), Report()))
    for i, item in enumerate(_as_list(data.get("services"), f"{origin}: services")):
        entries.append(("ondrop", "", _mapping(item, f"{origin}: services[{i}]"), Report()))
    if not entries:
        raise DefinitionError(f"{origin}: defines no services")

    errors: list[str] = []
    clusters: dict[str, str] = {}  # service name -> the OSCAR cluster it was first given for
    for shape, cluster, raw, report in entries:
        build_spec = raw.pop("build", None) if shape != "scar" else None
        mapped = (
            scar.map_function(raw, report) if shape == "scar" else oscar.map_service(raw, report)
        )
        name = str(mapped.get("name") or "") or None
        if build_spec is not None and name and not isinstance(base, Path):
            report.error("build", "an FDL sent over HTTP builds no image: use `ondrop apply`")
        elif build_spec is not None and name and isinstance(base, Path):
            build = _build(build_spec, base, name, mapped, report)
            if build is not None:
                definition.builds[name] = build
        _resolve_script(mapped, base, report)
        service = _validate(mapped, report)
        if service is not None:
            service = _attach_providers(service, providers, report)
            first = clusters.get(service.name)
            if first is None:
                clusters[service.name] = cluster
                definition.services.append(service)
            elif cluster and first and cluster != first:
                report.warnings = [
                    Problem(
                        "",
                        f"also defined for OSCAR cluster {cluster!r}; "
                        f"ondrop is one cluster and keeps the definition for "
                        f"{first!r}",
                    )
                ]
            else:
                report.error("name", "another service in this file has the same name")
        errors += [describe(origin, name, p) for p in report.errors]
        definition.warnings += [describe(origin, name, p) for p in report.warnings]
    if errors:
        raise DefinitionError("\n".join(errors))
    return definition


def parse_service(raw: Any, where: str = "") -> tuple[Service, list[str]]:
    """A service JSON (OSCAR's or ondrop's) as `Service`, plus warnings; DefinitionError."""
    report = Report()
    if not isinstance(raw, dict):
        raise DefinitionError(f"{where or 'service'}: expected a JSON object")
    mapped = oscar.map_service(raw, report)
    service = _validate(mapped, report)
    name = str(raw.get("name") or "") or None
    if service is None or report.errors:
        raise DefinitionError("\n".join(describe(where, name, p) for p in report.errors))
    return service, [describe(where, name, p) for p in report.warnings]


def _validate(mapped: dict[str, Any], report: Report) -> Service | None:
    try:
        service = Service.model_validate(mapped)
    except ValidationError as exc:
        report.add_validation(exc)
        return None
    problems = service.environment.problems()  # at apply only; see Environment.problems
    report.errors += problems
    return None if problems else service


def _resolve_script(mapped: dict[str, Any], base: Path | Mapping[str, str], report: Report) -> None:
    script = mapped.get("script")
    if script is None:
        return
    if not isinstance(script, str):
        report.error("script", "expected a file name or the script's text")
        return
    if "\n" in script.strip():
        return  # inline text
    if not isinstance(base, Path):
        sent = _sent(script.strip(), base)
        if sent is not None:
            mapped["script"] = sent
        elif re.fullmatch(r"[^\s]*[./][^\s]*", script.strip()):
            names = ", ".join(sorted(base)) or "none"
            report.error(
                "script", f"script file {script!r} was not sent with the FDL (sent: {names})"
            )
        return
    candidate = base / script.strip()
    if candidate.is_file():
        try:
            mapped["script"] = candidate.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            report.error("script", f"cannot read {candidate}: {exc}")
    elif re.fullmatch(r"[^\s]*[./][^\s]*", script.strip()):
        # One word with a dot or a slash is a file name ("script.sh"), not a command.
        report.error("script", f"script file {script!r} not found (looked for {candidate})")


def _sent(name: str, scripts: Mapping[str, str]) -> str | None:
    """The text sent for the script file `name`: by its path as the FDL writes it (`./`
    aside), else by its file name alone (what a browser sends: no folders)."""
    tidy = {key.removeprefix("./"): text for key, text in scripts.items()}
    for key in (name.removeprefix("./"), PurePosixPath(name).name):
        if key in tidy:
            return tidy[key]
    return None


def _build(
    spec: Any, base: Path, name: str, mapped: dict[str, Any], report: Report
) -> Build | None:
    """`build: folder` or `build: {context: folder, file: Containerfile}`, relative to the
    FDL; the image is tagged as the service's `image` (set to localhost/<name> if empty)."""
    if isinstance(spec, str):
        spec = {"context": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("context", "."), str):
        report.error("build", "expected a folder, or {context: folder, file: Containerfile}")
        return None
    unknown = set(spec) - {"context", "file"}
    if unknown:
        report.unknown(f"build.{sorted(unknown)[0]}", {"context", "file"})
        return None
    context = (base / spec.get("context", ".")).resolve()
    file = (context / spec["file"]) if spec.get("file") else None
    if not context.is_dir():
        report.error("build", f"build context {context} is not a folder")
        return None
    found = file or next(
        (context / n for n in ("Containerfile", "Dockerfile") if (context / n).is_file()), None
    )
    if found is None or not found.is_file():
        report.error("build", f"no Containerfile or Dockerfile in {context}")
        return None
    tag = str(mapped.get("image") or f"localhost/ondrop-{name}:latest")
    mapped["image"] = tag
    return Build(context, found, tag)


def _attach_providers(
    service: Service, providers: dict[str, dict[str, dict[str, Any]]], report: Report
) -> Service:
    own = {kind: dict(entries) for kind, entries in service.storage_providers.items()}
    for name in sorted(service.provider_names()):
        kind, _, ident = name.partition(".")
        if ident in own.get(kind, {}):
            continue
        if ident in providers.get(kind, {}):
            own.setdefault(kind, {})[ident] = providers[kind][ident]
    return service.model_copy(update={"storage_providers": own})


def _as_list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DefinitionError(f"{where}: expected a list")
    return value


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DefinitionError(f"{where}: expected a mapping of service fields")
    return value


__all__ = ["Build", "Definition", "Problem", "load_file", "load_text", "parse_service"]
