"""Recipes a hostile user writes: alias bombs, huge or binary files, duplicate keys, deep nesting, `_base_` of a
wrong type, long values echoed in messages, plugins that are folders, built-ins replaced by plugins. Each is
refused fast with a message naming the file (or key) and a value cut to a readable length."""
import logging
from pathlib import Path

import pytest

from gluon_yolo3.plugins import PluginError, load_plugin
from gluon_yolo3.recipe import RecipeError, load_recipe
from gluon_yolo3.registry import Registry, RegistryError


def write(path: Path, text) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def alias_bomb(levels: int, width: int = 9) -> str:
    """`a0: &a0 [1, ...]`, `a1: &a1 [*a0, *a0, ...]`, ...: `width ** levels` values once expanded, a few hundred bytes."""
    lines = [f"x0: &a0 [{', '.join(['1'] * width)}]"]
    for k in range(1, levels):
        lines.append(f"x{k}: &a{k} [{', '.join([f'*a{k - 1}'] * width)}]")
    return "\n".join(lines)


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    """Before: 9^6 values reached the schema check, whose message printed all of them (megabytes; nine levels
    took 87 s and 14 GB)."""
    path = write(tmp_path / "bomb.yaml", "_defs_:\n" + "\n".join("  " + ln for ln in alias_bomb(6).splitlines())
                 + "\ntrain:\n  lr: *a5\n")
    assert path.stat().st_size < 500
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message and "expand to more than" in message and len(message) < 400


def test_a_value_in_a_message_is_cut_to_a_readable_length(tmp_path):
    """Before: the whole 20000-number list was echoed (over 100 kB of message)."""
    path = write(tmp_path / "long.yaml", "train:\n  lr: [" + ", ".join(["123456"] * 20000) + "]\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "train.lr must be a number > 0, got [123456, 123456" in message and len(message) < 400
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path / "key.yaml", "train:\n  " + "x" * 1000 + ": 1\n"))
    assert "unknown key 'train.xxx" in str(info.value) and len(str(info.value)) < 600


def test_a_recipe_file_is_bounded_in_size(tmp_path):
    path = write(tmp_path / "huge.yaml", "# padding\n" * 200000 + "train: {lr: 0.1}\n")
    with pytest.raises(RecipeError, match=f"recipe {path} is larger than 1024 kB"):
        load_recipe(path)


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"train:\n  lr: \xff\xfe0.1\n",
                                     b"name: a\x00b\n"])
def test_a_binary_file_given_as_a_recipe_is_named(tmp_path, content, invoke):
    """Before: `'utf-8' codec can't decode byte 0x89 in position 0`, no file named."""
    path = write(tmp_path / "photo.yaml", content)
    with pytest.raises(RecipeError, match=f"recipe {path} is not a text file"):
        load_recipe(path)
    result = invoke("data", "check", path)
    assert result.exit_code == 2 and str(path) in result.output and "Traceback" not in result.output


def test_duplicate_keys_are_refused_naming_the_key_and_both_lines(tmp_path):
    """Before: the second `train:` block silently replaced the first."""
    path = write(tmp_path / "dup.yaml", "name: dup\ntrain:\n  lr: 0.1\nmodel:\n  input_size: 64\n"
                                        "train:\n  epochs: 3\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(path) in str(info.value) and "duplicate key 'train' on lines 2 and 6" in str(info.value)
    nested = write(tmp_path / "dup2.yaml", "train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n")
    with pytest.raises(RecipeError, match="duplicate key 'lr' on lines 2 and 4"):
        load_recipe(nested)
    with pytest.raises(RecipeError, match="duplicate key 'type'"):
        load_recipe(write(tmp_path / "ok.yaml", ""), ["model.nms={type: nms, type: class_aware}"])
    merged = load_recipe(write(tmp_path / "merge.yaml", "train: &t {lr: 0.1, epochs: 2}\n"   # `<<` keys may be
                                                        "predict:\n  <<: {score_thresh: 0.2}\n"    # overridden
                                                        "  score_thresh: 0.4\n"), ["train.epochs=3"])
    assert merged["train"] == {**merged["train"], "lr": 0.1, "epochs": 3} and merged["predict"]["score_thresh"] == 0.4


@pytest.mark.parametrize("depth", [60, 5000])
def test_a_recipe_nested_too_deep_is_named(tmp_path, depth, invoke):
    """Before: 5000 levels raised RecursionError (no file named; a traceback in the CLI's words)."""
    path = write(tmp_path / "deep.yaml", "train:\n  lr: " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(path) in str(info.value) and "nests deeper than 50 levels" in str(info.value)
    result = invoke("train", path, "--workdir", tmp_path / "run")
    assert result.exit_code == 2 and "deep.yaml" in result.output and not (tmp_path / "run").exists()


def test_an_alias_that_holds_itself_is_refused(tmp_path):
    with pytest.raises(RecipeError, match="refers to the value that holds it"):
        load_recipe(write(tmp_path / "loop.yaml", "train:\n  lr: &a [1, *a]\n"))


@pytest.mark.parametrize("base, shown", [("5", "got 5"), ("[{a: 1}]", "got [{'a': 1}]"), ("[null]", "got [None]"),
                                         ("{a: b.yaml}", "got {'a': 'b.yaml'}")])
def test_a_base_of_the_wrong_type_is_named(tmp_path, base, shown):
    """Before: `'int' object is not iterable`, `unsupported operand type(s) for /: 'PosixPath' and 'dict'`."""
    path = write(tmp_path / "child.yaml", f"_base_: {base}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert f"{path}: _base_ must be a recipe file or a list of them" in str(info.value) and shown in str(info.value)


def test_a_base_that_is_a_folder_or_a_long_chain_is_named(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(RecipeError, match="_base_ file 'folder' not found"):
        load_recipe(write(tmp_path / "a.yaml", "_base_: folder\n"))
    for k in range(40):
        write(tmp_path / f"c{k}.yaml", f"_base_: c{k + 1}.yaml\n")
    write(tmp_path / "c40.yaml", "train: {lr: 0.1}\n")
    with pytest.raises(RecipeError, match="more than 32 files in one _base_ chain"):
        load_recipe(tmp_path / "c0.yaml")


def test_a_base_named_many_times_is_read_once(tmp_path, monkeypatch):
    """Ten files each naming the next ten times: 10^10 reads before, eleven now."""
    from gluon_yolo3 import recipe as recipe_mod
    write(tmp_path / "b10.yaml", "train: {lr: 0.5}\n")
    for k in range(10):
        write(tmp_path / f"b{k}.yaml", "_base_: [" + ", ".join([f"b{k + 1}.yaml"] * 10) + "]\n")
    reads, real = [], recipe_mod.read_text_file
    monkeypatch.setattr(recipe_mod, "read_text_file", lambda path, *a: reads.append(path) or real(path, *a))
    assert load_recipe(tmp_path / "b0.yaml")["train"]["lr"] == 0.5
    assert len(reads) == 11


def test_a_folder_or_a_non_python_file_as_a_plugin_is_named(tmp_path, demo_recipe, invoke):
    """Before: AttributeError ('NoneType' object has no attribute 'loader')."""
    (tmp_path / "plugdir").mkdir()
    with pytest.raises(PluginError, match="plugdir' is a folder, not a file"):
        load_plugin(str(tmp_path / "plugdir"))
    with pytest.raises(PluginError, match="notes.txt' is not a Python file"):
        load_plugin(str(write(tmp_path / "notes.txt", "x = 1\n")))
    result = invoke("data", "check", demo_recipe, "--set", f"plugins=[{tmp_path / 'plugdir'}]")
    assert result.exit_code == 2 and "is a folder" in result.output and "Traceback" not in result.output


def test_a_plugin_replacing_a_built_in_is_logged(caplog):
    reg = Registry("THINGS")

    @reg.register("gadget")
    class Gadget:
        pass

    with caplog.at_level(logging.WARNING, logger="gluon_yolo3.registry"):
        @reg.register("gadget", override=True)
        class Better:
            pass
    assert reg.get("gadget") is Better
    line = [r.getMessage() for r in caplog.records]
    assert len(line) == 1 and "THINGS: 'gadget' of" in line[0] and "Gadget is replaced by" in line[0]
    assert line[0].endswith("Better (override=True)")


def test_a_type_that_is_not_a_name_is_named():
    """Before: TypeError (unhashable type: 'list')."""
    with pytest.raises(RegistryError, match=r"loss.terms.0: LOSSES: a type is a name, got \['a'\]"):
        from gluon_yolo3.registry import LOSSES
        LOSSES.build({"type": ["a"]}, where="loss.terms.0")
