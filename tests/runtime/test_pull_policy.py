"""The pull policy (ONDROP_PULL: always, missing, never), on an engine whose store and
registry are stand-ins: what it asks the registry for, and when. The real engine's side
(an image that is not there refused, or its jobs waiting) is in
tests/e2e/test_containers_e2e.py, which never reaches a registry."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ondrop.errors import NotFoundError
from ondrop.runtime import images as images_module
from ondrop.runtime.engine import Engine, Image
from ondrop.runtime.images import Images


class StandIn(Engine):
    """An engine with a store of image names and a registry that has `published`."""

    def __init__(self, local: set[str], published: set[str]) -> None:
        super().__init__("podman", "podman")
        self.local, self.published = local, published
        self.pulls: list[str] = []

    def image(self, ref: str) -> Image | None:
        return Image(id=f"id-{ref}", ref=ref) if ref in self.local else None

    def _run(
        self, *args: str, timeout: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        assert args[0] == "pull", args  # nothing else is asked here
        ref = args[-1]
        self.pulls.append(ref)
        if ref in self.published:
            self.local.add(ref)
            return subprocess.CompletedProcess(args, 0, "", "")
        return subprocess.CompletedProcess(args, 125, "", "Error: connection refused")


def test_never_pulls_and_says_what_to_do(tmp_path: Path) -> None:
    engine = StandIn(local={"here"}, published={"there"})
    images = Images(engine, tmp_path, pull="never")
    assert images.image("here").ref == "here"
    with pytest.raises(NotFoundError, match=r"pull policy is never .* build or import it"):
        images.image("there")
    assert engine.pulls == []


def test_missing_pulls_only_what_is_not_there(tmp_path: Path) -> None:
    engine = StandIn(local={"here"}, published={"there"})
    images = Images(engine, tmp_path, pull="missing")
    assert images.image("here").ref == "here" and images.image("there").ref == "there"
    assert engine.pulls == ["there"]
    with pytest.raises(NotFoundError, match="registry could not be reached"):
        images.image("nowhere")


def test_always_pulls_again_but_keeps_the_local_one_when_the_registry_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = StandIn(local={"here", "there"}, published={"there"})
    images = Images(engine, tmp_path, pull="always")
    assert images.image("there").ref == "there"
    assert images.image("here").ref == "here"  # the registry has it not: the local one
    assert engine.pulls == ["there", "here"]
    # within PULL_AGAIN an image is not pulled again, once its check (RECHECK) expires
    monkeypatch.setattr(images_module, "RECHECK", 0.0)
    images.image("there")
    assert engine.pulls == ["there", "here"]
    monkeypatch.setattr(images_module, "PULL_AGAIN", 0.0)
    images.image("there")
    assert engine.pulls == ["there", "here", "there"]


@pytest.mark.parametrize(
    ("given", "policy"),
    [
        ("always", "always"),
        ("Missing", "missing"),
        ("never", "never"),
        ("true", "missing"),
        ("0", "never"),
    ],
)
def test_the_setting_takes_a_policy_or_the_old_booleans(given: str, policy: str) -> None:
    from ondrop.settings import Settings

    assert Settings.load(environ={"ONDROP_PULL": given}).pull == policy


def test_another_word_is_refused_naming_the_policies() -> None:
    from ondrop.errors import DefinitionError
    from ondrop.settings import Settings

    with pytest.raises(
        DefinitionError, match="ONDROP_PULL: expected one of always, missing, never"
    ):
        Settings.load(environ={"ONDROP_PULL": "sometimes"})
