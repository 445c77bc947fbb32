"""Plugins: files named by recipes, modules, entry points; their components used in real training."""
import json
import math
import textwrap
from pathlib import Path

import pytest

from gluon_yolo3 import api, plugins
from gluon_yolo3.plugins import PluginError, load_plugin, load_plugins
from gluon_yolo3.registry import ALL, LOSSES, import_all_builtins

TINY = ["data.train.num_images=16", "data.val.num_images=8", "train.batch_size=8", "train.epochs=1",
        "model.input_size=64", "data.train.image_size=64", "data.val.image_size=64", "data.num_workers=0"]
# darknet_tiny at input 64: 4x4 and 2x2 grids with 3 anchors each
PREDICTIONS_AT_64 = (4 * 4 + 2 * 2) * 3

CONST_TERM_PLUGIN = '''
"""A test plugin: a loss term worth exactly 1 per prediction, so its logged value is checkable."""
from gluon_yolo3.losses.terms import LossTerm, field, per_image_sum
from gluon_yolo3.registry import LOSSES


@LOSSES.register("{name}")
class CountPredictions(LossTerm):
    """Counts the predictions of each image (a test term)."""

    short_name = "{name}"

    def hybrid_forward(self, F, pred, target, pred_boxes, noobj):
        return per_image_sum(F, F.ones_like(field(F, pred, 4, 5)) + 0 * field(F, pred, 4, 5))
'''


@pytest.fixture
def isolated(monkeypatch):
    """Forget, after the test, the registrations and plugin imports it made."""
    import_all_builtins()
    for registry in ALL.values():
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    monkeypatch.setattr(plugins, "_loaded", dict(plugins._loaded))


def read_metrics(run_dir: Path):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_recipe_plugin_file_registers_a_loss_used_in_training(tmp_path, elsewhere, isolated, recipes):
    name = "count_" + tmp_path.name.replace("-", "_")[-20:]
    (tmp_path / "exp/plugins").mkdir(parents=True)
    (tmp_path / "exp/plugins/count.py").write_text(CONST_TERM_PLUGIN.format(name=name))
    recipe_path = tmp_path / "exp/recipe.yaml"
    recipe_path.write_text(textwrap.dedent(f"""\
        _base_: {recipes / 'demo_tiny.yaml'}
        plugins: [plugins/count.py]
        loss:
          terms:
            - {{type: xy_bce, weight: 1.0}}
            - {{type: wh_l1, weight: 1.0}}
            - {{type: objectness_bce, weight: 1.0}}
            - {{type: class_bce, weight: 1.0}}
            - {{type: {name}, weight: 0.5}}
        """))
    assert name not in LOSSES
    recipe = api.load(recipe_path, TINY)           # relative to the recipe's folder, not to cwd
    assert recipe["plugins"] == [str(tmp_path / "exp/plugins/count.py")]
    assert name in LOSSES
    assert LOSSES.describe()[name] == "Counts the predictions of each image (a test term)."

    summary = api.train(recipe, workdir=str(tmp_path / "run"), progress=False, log=lambda *_: None)
    assert summary["steps"] == 2
    train_lines = [m for m in read_metrics(tmp_path / "run") if m["kind"] == "train"]
    assert train_lines
    for line in train_lines:
        # the term really ran inside the loss: per image, weight * number of predictions
        assert line[f"loss/{name}"] == pytest.approx(0.5 * PREDICTIONS_AT_64)
        assert all(math.isfinite(line[f"loss/{k}"]) for k in ("xy", "wh", "obj", "cls", name))
        assert line["loss"] == pytest.approx(sum(line[f"loss/{k}"] for k in ("xy", "wh", "obj", "cls", name)))


def test_focal_objectness_plugin_trains_one_epoch(tmp_path, recipes):
    recipe = api.load(recipes / "demo_tiny_focal.yaml", TINY + ["loss.terms.2.name=focal"])
    assert "focal_objectness" in LOSSES
    assert LOSSES.get("focal_objectness").__module__.startswith("gluon_yolo3_plugin_focal_objectness")
    summary = api.train(recipe, workdir=str(tmp_path / "focal"), progress=False, log=lambda *_: None)
    assert summary["epochs"] == 1 and summary["steps"] == 2
    lines = read_metrics(tmp_path / "focal")
    train_lines = [m for m in lines if m["kind"] == "train"]
    assert train_lines
    for line in train_lines:
        assert set(k for k in line if k.startswith("loss/")) == {"loss/xy", "loss/wh", "loss/focal", "loss/cls"}
        assert math.isfinite(line["loss/focal"]) and line["loss/focal"] > 0
        assert math.isfinite(line["loss"])
    assert any(m["kind"] == "val" for m in lines)
    assert (tmp_path / "focal/checkpoints/last.json").exists()


def test_plugin_raising_on_import_names_the_plugin(tmp_path, isolated):
    bad = tmp_path / "broken_plugin.py"
    bad.write_text("raise RuntimeError('boom in plugin')\n")
    with pytest.raises(PluginError) as info:
        load_plugin(str(bad))
    msg = str(info.value)
    assert str(bad) in msg
    assert "RuntimeError: boom in plugin" in msg
    assert isinstance(info.value, ImportError)
    assert str(bad) not in plugins._loaded                          # not cached as loaded


def test_plugin_raising_on_import_via_recipe(tmp_path, isolated):
    (tmp_path / "bad.py").write_text("import gluon_yolo3\nx = 1 / 0\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("plugins: [bad.py]\n")
    with pytest.raises(PluginError, match=r"bad\.py' failed while importing: ZeroDivisionError"):
        api.load(recipe)


def test_plugin_with_missing_dependency_names_it(tmp_path, isolated):
    (tmp_path / "needs.py").write_text("import a_module_that_does_not_exist_xyz\n")
    with pytest.raises(PluginError) as info:
        load_plugin(str(tmp_path / "needs.py"))
    assert "needs.py" in str(info.value) and "a_module_that_does_not_exist_xyz" in str(info.value)


def test_missing_plugin_file(tmp_path, elsewhere, isolated):
    with pytest.raises(PluginError, match=r"plugin file '.*nothing_here\.py' not found"):
        load_plugin(str(tmp_path / "nothing_here.py"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("plugins: [plugins/not_there.py]\n")
    with pytest.raises(PluginError, match=r"plugins/not_there\.py"):
        api.load(recipe)


def test_missing_plugin_module(isolated):
    with pytest.raises(PluginError, match="plugin 'no_such_pkg_xyz.plugin' cannot be imported"):
        load_plugins(["no_such_pkg_xyz.plugin"])


def test_plugin_module_by_dotted_name(tmp_path, monkeypatch, isolated):
    name = "dotted_" + tmp_path.name.replace("-", "_")[-20:]
    pkg = tmp_path / "mypkg_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / f"{name}.py").write_text(CONST_TERM_PLUGIN.format(name=name))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = load_plugin(f"mypkg_plugins.{name}")
    assert name in LOSSES
    assert load_plugin(f"mypkg_plugins.{name}") is module


def test_plugin_file_is_imported_once(tmp_path, isolated):
    counter = tmp_path / "count.txt"
    plugin = tmp_path / "once.py"
    plugin.write_text(f"open({str(counter)!r}, 'a').write('x')\n")
    first = load_plugin(str(plugin))
    load_plugins([str(plugin), plugin])
    assert load_plugin(str(plugin)) is first
    assert counter.read_text() == "x"


def test_same_plugin_file_under_two_spellings_loads_once(tmp_path, monkeypatch, isolated):
    name = "twice_" + tmp_path.name.replace("-", "_")[-20:]
    (tmp_path / "twice.py").write_text(CONST_TERM_PLUGIN.format(name=name))
    monkeypatch.chdir(tmp_path)
    load_plugin(str(tmp_path / "twice.py"))
    load_plugin("twice.py")
    assert name in LOSSES


class FakeEntryPoint:
    def __init__(self, name, value, load):
        self.name, self.value, self._load = name, value, load

    def load(self):
        return self._load()


def test_entry_point_plugins_are_loaded(monkeypatch, isolated):
    calls = []

    def register():
        calls.append(1)

        @LOSSES.register("entry_point_term_xyz")
        def entry_point_term():
            """Registered by an entry point."""

        return "the module"

    groups = []

    def fake_entry_points(group):
        groups.append(group)
        return [FakeEntryPoint("fake", "fake_pkg.plugin:register", register)]

    monkeypatch.setattr(plugins, "entry_points", fake_entry_points)
    assert "entry_point_term_xyz" not in LOSSES
    load_plugins()
    assert groups == ["gluon_yolo3.plugins"]
    assert calls == [1]
    assert "entry_point_term_xyz" in LOSSES
    assert plugins._loaded["entry-point:fake_pkg.plugin:register"] == "the module"
    load_plugins([])
    assert calls == [1]                                          # loaded once


def test_entry_point_loaded_by_api_load(tmp_path, monkeypatch, isolated, recipes):
    calls = []
    monkeypatch.setattr(plugins, "entry_points",
                        lambda group: [FakeEntryPoint("ep", "pkg.mod", lambda: calls.append(group))])
    api.load(recipes / "demo_tiny.yaml")
    assert calls == ["gluon_yolo3.plugins"]


def test_failing_entry_point_names_it(monkeypatch, isolated):
    def broken():
        raise ValueError("cannot load me")

    monkeypatch.setattr(plugins, "entry_points",
                        lambda group: [FakeEntryPoint("broken_ep", "broken_pkg:plug", broken)])
    with pytest.raises(PluginError) as info:
        load_plugins()
    assert "'broken_ep'" in str(info.value) and "broken_pkg:plug" in str(info.value)
    assert "cannot load me" in str(info.value)
