"""The experiment protocol (core/experiment.py) on a tiny synthetic ImageNet-style folder."""
from __future__ import annotations

import json
import random

import pytest
from PIL import Image, ImageDraw

from core import cli
from core.experiment import (ExperimentSettings, class_order, format_table, paired_differences, run_experiment,
                             scan_folder, split_tasks)
from core.sg.methods import METHODS
from core.i18n import UserError

SHAPES = {"red_square": ((220, 30, 30), "square"), "green_circle": ((30, 200, 40), "circle"),
          "blue_triangle": ((30, 50, 220), "triangle"), "yellow_cross": ((230, 210, 20), "cross")}


def _shape_png(path, colour, shape, rng: random.Random, size: int = 20) -> None:
    image = Image.new("RGB", (size, size), tuple(rng.randrange(0, 60) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    x, y, r = rng.randrange(4, 8), rng.randrange(4, 8), rng.randrange(8, 12)
    if shape == "square":
        draw.rectangle((x, y, x + r, y + r), fill=colour)
    elif shape == "circle":
        draw.ellipse((x, y, x + r, y + r), fill=colour)
    elif shape == "triangle":
        draw.polygon([(x, y + r), (x + r, y + r), (x + r // 2, y)], fill=colour)
    else:
        draw.rectangle((x + r // 3, y, x + 2 * r // 3, y + r), fill=colour)
        draw.rectangle((x, y + r // 3, x + r, y + 2 * r // 3), fill=colour)
    image.save(path)


def make_shapes_folder(root, n_train: int = 6, n_test: int = 3, with_test: bool = True):
    rng = random.Random(0)
    splits = {"train": n_train, **({"test": n_test} if with_test else {})}
    for split, n in splits.items():
        for folder, (colour, shape) in SHAPES.items():
            d = root / split / folder
            d.mkdir(parents=True)
            for i in range(n):
                _shape_png(d / f"{i:02d}.png", colour, shape, rng)
    return root


def tiny_settings(root, tmp_path, **overrides) -> ExperimentSettings:
    values = dict(data=root, tasks=2, seeds=[0], encoder="scratch+e5", methods=["finetune", "both"],
                  memory_per_class=2, overrides={"epochs": 1, "batch_size": 8, "lr": 0.01}, width=4, input_size=16,
                  cache_dir=tmp_path / "cache", decode_workers=0)
    values.update(overrides)
    return ExperimentSettings(**values)


def test_cli_experiment_writes_matrices_summaries_and_table(tmp_path, capsys):
    root = make_shapes_folder(tmp_path / "shapes")
    out = tmp_path / "results.json"
    code = cli.main(["experiment", "--data", str(root), "--tasks", "2", "--seeds", "1", "--encoder", "scratch+e5",
                     "--methods", "finetune", "both", "--epochs", "1", "--batch-size", "8",
                     "--width", "4", "--input-size", "16", "--memory-per-class", "2",
                     "--threads", "1", "--cache", str(tmp_path / "cache"), "--out", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["classes"] == ["blue triangle", "green circle", "red square", "yellow cross"]
    assert results["settings"]["eval_split"] == "test"
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [("finetune", 0), ("both", 0)]
    for run in results["runs"]:
        # lower-triangular 2×2 matrices: row t holds the tasks seen after task t
        assert [len(row) for row in run["acc"]] == [1, 2]
        assert [len(row) for row in run["acc_task_aware"]] == [1, 2]
        assert all(0.0 <= v <= 1.0 for row in run["acc"] + run["acc_task_aware"] for v in row)
        assert set(run["summary"]) >= {"aia", "last", "forgetting", "bwt", "aia_task_aware"}
        expected_last = (run["acc"][1][0] + run["acc"][1][1]) / 2  # two classes per task
        assert run["summary"]["last"] == pytest.approx(expected_last)
        assert [len(t) for t in run["tasks"]] == [2, 2]
    memory = {r["method"]: r["memory_size"] for r in results["runs"]}
    assert memory == {"finetune": 0, "both": 2 * 4}  # no rehearsal for plain fine-tuning
    assert set(results["aggregate"]) == {"finetune", "both"}
    printed = capsys.readouterr().out
    assert METHODS["finetune"].title in printed and METHODS["both"].title in printed
    assert "| method | seeds | AIA | last | forgetting | BWT" in printed


def test_class_order_depends_on_seed_and_is_shared_by_the_methods_of_a_seed(tmp_path):
    assert class_order(100, 0) == class_order(100, 0)
    assert len({tuple(class_order(100, s)) for s in range(3)}) == 3
    assert sorted(class_order(100, 1)) == list(range(100))

    root = make_shapes_folder(tmp_path / "shapes")
    results = run_experiment(tiny_settings(root, tmp_path, seeds=[0, 1], methods=["finetune", "exemplars"]))
    orders = {(r["seed"], r["method"]): r["class_order"] for r in results["runs"]}
    assert orders[(0, "finetune")] == orders[(0, "exemplars")]
    assert orders[(1, "finetune")] == orders[(1, "exemplars")]
    assert orders[(0, "finetune")] != orders[(1, "finetune")]
    by = {(r["seed"], r["method"]): r for r in results["runs"]}
    for seed in (0, 1):
        # same initial weights and batch order: rehearsal only starts to matter at task 2
        assert by[(seed, "finetune")]["acc"][0] == by[(seed, "exemplars")]["acc"][0]
        assert by[(seed, "finetune")]["tasks"][0] == orders[(seed, "finetune")][:2]


def test_images_are_decoded_once_and_reused_from_the_cache(tmp_path):
    root = make_shapes_folder(tmp_path / "shapes")
    first = run_experiment(tiny_settings(root, tmp_path, methods=["finetune"]))
    assert first["data"]["mode"] == "images" and first["data"]["computed"] == 4 * 6 + 4 * 3
    again = run_experiment(tiny_settings(root, tmp_path, methods=["finetune"]))
    assert again["data"]["computed"] == 0
    assert again["runs"][0]["acc"] == first["runs"][0]["acc"]  # and the run is reproducible


def test_validation_split_comes_from_train_and_never_reads_test(tmp_path):
    root = make_shapes_folder(tmp_path / "shapes", n_train=10, with_test=False)
    with pytest.raises(UserError) as err:
        scan_folder(root)
    assert err.value.key == "experiment.no_split"
    data = scan_folder(root, validation=0.2)
    assert data.eval_split == "validation"
    assert len(data.eval_paths) == 4 * 2 and len(data.train_paths) == 4 * 8
    assert not set(data.eval_paths) & set(data.train_paths)
    assert scan_folder(root, validation=0.2).eval_paths == data.eval_paths  # seed-independent
    results = run_experiment(tiny_settings(root, tmp_path, validation=0.2, methods=["finetune"]))
    assert results["settings"]["eval_split"] == "validation"
    assert results["data"]["n_eval"] == 8


def test_split_tasks_and_refusals(tmp_path):
    assert split_tasks(list(range(10)), 5) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [len(t) for t in split_tasks(list(range(7)), 3)] == [3, 2, 2]
    with pytest.raises(UserError) as err:
        split_tasks(list(range(4)), 5)
    assert "5" in err.value.message("ja") and "5" in err.value.message("en")
    with pytest.raises(UserError):
        ExperimentSettings(data=tmp_path, tasks=2, seeds=[0], methods=["nonsense"])


def test_format_table_shows_mean_and_std_in_percent():
    table = format_table({"both": {"aia": {"mean": 0.5, "std": 0.1, "n": 3},
                                   "last": {"mean": 0.25, "std": 0.0, "n": 3}}})
    row = table.splitlines()[-1]
    assert row.startswith("| + SG-RL + SG-KD (method) | 3 | 50.0 ± 10.0 | 25.0 ± 0.0 | – |")


def test_pretrained_backbone_runs_on_cached_features_with_every_baseline(tmp_path):
    """The default encoder's path: prefix features cached once (a second experiment computes none),
    NCM / joint / both side by side, AUROC of trained vs not-yet-trained classes reported."""
    root = make_shapes_folder(tmp_path / "shapes", n_train=4, n_test=2)
    settings = tiny_settings(root, tmp_path, encoder="effnet-lite0+e5", methods=["ncm", "joint", "both"],
                             input_size=32, width=None, overrides={"epochs": 2, "batch_size": 8})
    first = run_experiment(settings)
    assert first["data"]["mode"] == "features" and first["data"]["computed"] == 4 * 4 + 4 * 2
    by = {r["method"]: r for r in first["runs"]}
    assert by["ncm"]["summary"]["forgetting"] == pytest.approx(0.0)     # class means never move
    assert by["ncm"]["acc"][1][1] > 0.5                                   # pretrained features separate shapes
    for run in first["runs"]:
        assert len(run["auroc_per_task"]) == 1 and 0.0 <= run["summary"]["auroc"] <= 1.0
    assert run_experiment(settings)["data"]["computed"] == 0


def test_paired_differences_pair_runs_by_seed():
    runs = [{"seed": s, "method": m, "summary": {"last": v}}
            for s, m, v in [(0, "both", 0.8), (0, "ncm", 0.7), (1, "both", 0.6), (1, "ncm", 0.7)]]
    diff = paired_differences(runs, "both", "ncm")
    assert diff["n"] == 2 and diff["wins"] == 1 and diff["mean"] == pytest.approx(0.0)


def test_shots_keep_the_first_k_training_images_and_heads_report_unknown_detection(tmp_path):
    root = make_shapes_folder(tmp_path / "shapes", n_train=5, n_test=3)
    data = scan_folder(root, shots=2)
    assert len(data.train_paths) == 2 * len(SHAPES)
    assert all(p.name in ("00.png", "01.png") for p in data.train_paths)   # the first K, by name
    settings = tiny_settings(root, tmp_path, encoder="effnet-lite0+e5", methods=["fecam"], shots=3,
                             input_size=32, width=None)
    result = run_experiment(settings)
    assert result["data"]["n_train"] == 3 * len(SHAPES)
    summary = result["runs"][0]["summary"]
    assert 0.0 <= summary["auroc"] <= 1.0 and 0.0 <= summary["rejected_untrained"] <= 1.0
    assert {"auroc_maha", "auroc_cosine"} <= set(summary)
    assert 0.0 <= summary["rejected_trained"] <= 1.0
