"""Bad input through every command: one line naming the file (and sample) and the fix, exit code 2, no traceback,
nothing already written lost. Also untrusted files through the CLI (pickles, diffusers folders) and --skip-bad."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.data import load_dataset

runner = CliRunner()


def fail(*args: object) -> str:
    """Run the CLI, expect exit code 2 and exactly one ``error:`` line on stderr (the last one); return it."""
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    return errors[0]


@pytest.fixture()
def workdir(tmp_path, monkeypatch, digits_model_path):
    monkeypatch.chdir(tmp_path)
    shutil.copy(digits_model_path, tmp_path / "m.pt")
    return tmp_path


def image_folder(root: Path, *, count: int = 20) -> Path:
    """The first ``count`` digits test images as 32x32 grayscale PNGs in class folders."""
    digits = load_dataset("digits", limit=count)
    for image, label, sample in zip(digits.images, digits.labels, digits.ids, strict=True):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(folder / f"{sample}.png")
    for label in range(10):
        (root / str(label)).mkdir(exist_ok=True)
    return root


def npz_file(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    np.savez(path, test_images=images, test_labels=labels)
    return path


def gray(n: int = 4, dtype=np.uint8) -> np.ndarray:
    return np.zeros((n, 32, 32), dtype)


EVALUATE = ("evaluate", "--model", "m.pt", "--attacks", "fgsm", "--out", "run")


def truncated_png(w: Path):
    folder = image_folder(w / "imgs")
    victim = sorted((folder / "3").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:60])
    return (*EVALUATE, "--data", "imgs"), [victim.name, "unreadable", "--skip-bad"]


def corrupt_image(w: Path):
    folder = image_folder(w / "imgs")
    (folder / "5" / "garbage.png").write_bytes(b"\x89PNG not really an image" * 10)
    return (*EVALUATE, "--data", "imgs"), ["garbage.png", "--skip-bad"]


def truncated_npz(w: Path):
    path = npz_file(w / "data.npz", gray(), np.zeros(4, np.int64))
    path.write_bytes(path.read_bytes()[:300])
    return (*EVALUATE, "--data", "data.npz"), ["data.npz", "not a readable .npz", "re-create"]


def wrong_dtype(w: Path):
    npz_file(w / "data.npz", gray(dtype=np.int32), np.zeros(4, np.int64))
    return (*EVALUATE, "--data", "data.npz"), ["data.npz", "dtype int32", "store uint8"]


def wrong_shape(w: Path):
    npz_file(w / "data.npz", np.zeros((4, 32, 32, 5), np.uint8), np.zeros(4, np.int64))
    return (*EVALUATE, "--data", "data.npz"), ["data.npz", "(4, 32, 32, 5)", "store grayscale or RGB"]


def float_labels(w: Path):
    npz_file(w / "data.npz", gray(), np.zeros(4, np.float32))
    return (*EVALUATE, "--data", "data.npz"), ["data.npz", "labels have dtype float32", "integer class indices"]


def label_out_of_range(w: Path):
    npz_file(w / "data.npz", gray(), np.array([0, 1, 11, 2]))
    return (*EVALUATE, "--data", "data.npz"), ["'data-test-00002'", "label 11", "outside the model's 10 classes"]


def nan_pixels(w: Path):
    images = np.zeros((4, 32, 32), np.float32)
    images[2, 5, 5] = np.nan
    npz_file(w / "data.npz", images, np.zeros(4, np.int64))
    return (*EVALUATE, "--data", "data.npz"), ["'data-test-00002'", "NaN or infinite", "remove or fix"]


def infinite_pixels(w: Path):
    images = np.zeros((4, 32, 32), np.float32)
    images[3, 0, 0] = np.inf
    npz_file(w / "data.npz", images, np.zeros(4, np.int64))
    return (*EVALUATE, "--data", "data.npz"), ["'data-test-00003'", "NaN or infinite"]


def out_of_range_pixels(w: Path):
    npz_file(w / "data.npz", np.full((4, 32, 32), 3.0, np.float32), np.zeros(4, np.int64))
    return (*EVALUATE, "--data", "data.npz"), ["'data-test-00000'", "outside [0, 1]", "store uint8"]


def empty_npz(w: Path):
    npz_file(w / "data.npz", gray(0), np.zeros(0, np.int64))
    return (*EVALUATE, "--data", "data.npz"), ["data.npz", "is empty", "at least one image"]


def empty_folder(w: Path):
    (w / "imgs" / "cat").mkdir(parents=True)
    return (*EVALUATE, "--data", "imgs"), ["imgs", "holds no images"]


def no_class_folders(w: Path):
    (w / "imgs").mkdir()
    (w / "imgs" / "README.txt").write_text("nothing here")
    return (*EVALUATE, "--data", "imgs"), ["imgs", "no class subfolders", "CLASS/IMAGE.png"]


def unreadable_directory(w: Path, monkeypatch: pytest.MonkeyPatch):
    folder = image_folder(w / "imgs")
    locked = folder / "4"
    real_iterdir = Path.iterdir

    def iterdir(self):  # chmod 000 does not stop root; deny the listing the way the OS would
        if self.resolve() == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    return (*EVALUATE, "--data", "imgs"), ["imgs/4", "Permission denied", "check its permissions"]


def channel_mismatch(w: Path):
    return (*EVALUATE, "--data", "digits", "--channels", "3"), ["3 channel(s)", "expects 1", "pass --channels 1"]


def size_mismatch(w: Path):
    return (*EVALUATE, "--data", "digits", "--image-size", "16"), ["16", "pass --image-size 32"]


def yaml_syntax(w: Path):
    (w / "broken.yaml").write_text("model: m.pt\ndata: [digits\n")
    return ("evaluate", "--config", "broken.yaml"), ["broken.yaml", "line"]


def yaml_unknown_key(w: Path):
    (w / "audit.yaml").write_text("model: m.pt\ndata: digits\nattack: [pgd]\n")
    return ("evaluate", "--config", "audit.yaml"), ["unknown key 'attack'", "attacks"]


def yaml_zero_steps(w: Path):
    (w / "audit.yaml").write_text("model: m.pt\ndata: digits\nattacks: [{name: pgdl2, steps: 0}]\n")
    return ("evaluate", "--config", "audit.yaml"), ["steps must be a whole number of at least 1", "got 0"]


def eps_negative(w: Path):
    return (*EVALUATE, "--data", "digits", "--eps", "-8/255"), ["eps", "finite and > 0", "8/255"]


def eps_zero(w: Path):
    return (*EVALUATE, "--data", "digits", "--eps", "0"), ["eps", "finite and > 0"]


def eps_unparsable(w: Path):
    return (*EVALUATE, "--data", "digits", "--eps", "eight/255"), ["'eight/255' does not parse", "8/255"]


def eps_l2_negative(w: Path):
    return (*EVALUATE, "--data", "digits", "--eps-l2", "-0.5"), ["eps_l2", "finite and > 0"]


def out_is_a_file(w: Path):
    (w / "run").write_text("keep me")
    return (*EVALUATE, "--data", "digits", "--limit", "4"), ["'run'", "existing file", "another --out"]


def attack_corrupt_folder(w: Path):
    folder = image_folder(w / "imgs")
    (folder / "1" / "bad.png").write_bytes(b"nope")
    return ("attack", "--model", "m.pt", "--data", "imgs", "--out", "adv"), ["bad.png", "--skip-bad"]


def attack_out_is_a_file(w: Path):
    (w / "adv").write_text("keep me")
    return ("attack", "--model", "m.pt", "--data", "digits", "--out", "adv"), ["'adv'", "already exists", "--out"]


def attack_eps_unparsable(w: Path):
    return ("attack", "--model", "m.pt", "--data", "digits", "--eps", "lots"), ["'lots' does not parse"]


def purify_truncated_npz(w: Path):
    path = npz_file(w / "data.npz", gray(), np.zeros(4, np.int64))
    path.write_bytes(path.read_bytes()[:200])
    return ("purify", "--purifier", "cold", "--data", "data.npz"), ["data.npz", "not a readable .npz"]


def purify_out_is_a_file(w: Path):
    (w / "pure").write_text("keep me")
    args = ("purify", "--purifier", "cold", "--data", "digits", "--out", "pure")
    return args, ["'pure'", "already exists", "--out"]


def train_empty_folder(w: Path):
    (w / "imgs" / "train" / "a").mkdir(parents=True)
    return ("train", "--data", "imgs", "--out", "vit.pt"), ["imgs", "holds no images"]


def train_out_is_a_directory(w: Path):
    (w / "vit.pt").mkdir()
    return ("train", "--data", "digits", "--out", "vit.pt"), ["'vit.pt' is a directory", "file path"]


def train_yaml_unknown_key(w: Path):
    (w / "recipe.yaml").write_text("epochs: 1\nlearning_rate: 0.1\n")
    return ("train", "--config", "recipe.yaml", "--out", "vit.pt"), ["learning_rate"]


def distill_truncated_teacher(w: Path):
    (w / "teacher.pt").write_bytes((w / "m.pt").read_bytes()[:500])
    return ("distill", "--teacher", "teacher.pt", "--data", "digits"), ["teacher.pt", "unreadable"]


def report_not_a_run(w: Path):
    (w / "notes").mkdir()
    return ("report", "notes"), ["notes", "robaudit run"]


def report_corrupt_records(w: Path):
    result = runner.invoke(app, [*EVALUATE, "--data", "digits", "--limit", "4"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    part = next((w / "run" / "records").glob("part-*.jsonl"))
    part.write_text(part.read_text()[:-40])
    return ("report", "run"), [part.name, "unreadable", "re-run the same evaluate command"]


CASES: dict[str, Callable] = {
    f.__name__: f
    for f in (
        truncated_png,
        corrupt_image,
        truncated_npz,
        wrong_dtype,
        wrong_shape,
        float_labels,
        label_out_of_range,
        nan_pixels,
        infinite_pixels,
        out_of_range_pixels,
        empty_npz,
        empty_folder,
        no_class_folders,
        unreadable_directory,
        channel_mismatch,
        size_mismatch,
        yaml_syntax,
        yaml_unknown_key,
        yaml_zero_steps,
        eps_negative,
        eps_zero,
        eps_unparsable,
        eps_l2_negative,
        out_is_a_file,
        attack_corrupt_folder,
        attack_out_is_a_file,
        attack_eps_unparsable,
        purify_truncated_npz,
        purify_out_is_a_file,
        train_empty_folder,
        train_out_is_a_directory,
        train_yaml_unknown_key,
        distill_truncated_teacher,
        report_not_a_run,
        report_corrupt_records,
    )
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_loses_nothing(case, workdir, monkeypatch):
    setup = CASES[case]
    args, expected = setup(workdir, monkeypatch) if "monkeypatch" in setup.__code__.co_varnames else setup(workdir)
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    line = fail(*args)
    for text in expected:
        assert text in line, f"{text!r} not in {line!r}"
    after = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    assert after == before, "a failed command changed or removed files"


def test_failed_overwrite_keeps_the_previous_run(workdir):
    result = runner.invoke(app, [*EVALUATE, "--data", "digits", "--limit", "4"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = (workdir / "run" / "summary.json").read_bytes()
    npz_file(workdir / "data.npz", gray(), np.array([0, 1, 12, 2]))
    assert "label 12" in fail(*EVALUATE, "--data", "data.npz", "--overwrite")
    assert (workdir / "run" / "summary.json").read_bytes() == summary


def test_skip_bad_evaluates_the_rest_and_the_report_lists_what_was_skipped(workdir):
    folder = image_folder(workdir / "imgs")
    (folder / "2" / "garbage.png").write_bytes(b"not an image")
    crafted = "<img src=x onerror=alert(1)>`**bold**`.png"  # a file name is data from elsewhere too
    (folder / "2" / crafted).write_bytes(b"not an image either")
    victim = sorted((folder / "7").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:50])
    assert "--skip-bad" in fail(*EVALUATE, "--data", "imgs")
    assert not (workdir / "run").exists()  # stopped before doing any work
    result = runner.invoke(app, [*EVALUATE, "--data", "imgs", "--skip-bad"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((workdir / "run" / "summary.json").read_text())
    assert summary["n_samples"] == 20 - 1  # the garbage file was never a sample; the truncated one is skipped
    skipped = {s["file"] for s in summary["data"]["provenance"]["skipped"]}
    assert skipped == {"2/garbage.png", f"2/{crafted}", f"7/{victim.name}"}
    report = (workdir / "run" / "report.md").read_text()
    assert "SKIPPED INPUT FILES" in report and "`2/garbage.png`" in report
    assert "`2/<img src=x onerror=alert(1)>'**bold**'.png`" in report  # inside a code span: shown literally
    html = (workdir / "run" / "report.html").read_text()
    assert "SKIPPED INPUT FILES" in html and "<img src=x" not in html and "&lt;img src=x onerror" in html
    assert "--skip-bad applies to image folders" in fail(*EVALUATE, "--data", "digits", "--skip-bad", "--out", "x")


def test_crafted_pickles_never_run_through_any_command(workdir):
    marker = workdir / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"state_dict": Evil()}, workdir / "evil.pt")
    for args in (
        ("evaluate", "--model", "evil.pt", "--data", "digits"),
        ("attack", "--model", "evil.pt", "--data", "digits", "--out", "adv"),
        ("distill", "--teacher", "evil.pt", "--data", "digits"),
        ("purify", "--purifier", "cold", "--purifier-checkpoint", "evil.pt", "--data", "digits", "--out", "p"),
        (*EVALUATE, "--data", "digits", "--purifier", "ebm", "--purifier-checkpoint", "evil.pt"),
    ):
        line = fail(*args)
        assert "evil.pt" in line and "arbitrary code" in line and "--trust-checkpoint" in line
        assert not marker.exists()
    assert not (workdir / "run").exists() and not (workdir / "adv").exists()


def test_trust_checkpoint_loads_a_pickled_module(workdir):
    from robaudit.models.classifiers import load_classifier

    torch.save(load_classifier(workdir / "m.pt"), workdir / "module.pt")
    assert "--trust-checkpoint" in fail(*EVALUATE, "--model", "module.pt", "--data", "digits", "--limit", "4")
    args = (*EVALUATE, "--model", "module.pt", "--data", "digits", "--limit", "4", "--trust-checkpoint")
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "can run code" in result.stderr
