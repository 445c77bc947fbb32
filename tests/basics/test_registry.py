"""The Registry: registration, building, error messages that name the problem and suggest a fix."""
import pytest

from gluon_yolo3.registry import ALL, LOSSES, Registry, RegistryError, closest


@pytest.fixture
def reg():
    reg = Registry("WIDGETS")

    @reg.register("gadget")
    class Gadget:
        """A gadget with a size.

        More text that describe() must not show.
        """

        def __init__(self, size: int = 1, colour: str = "red", *, owner=None):
            self.size, self.colour, self.owner = size, colour, owner

    @reg.register()
    def make_gizmo(count, scale=2.0):
        """Build a gizmo description."""
        return {"count": count, "scale": scale}

    return reg


def test_register_class_and_function_and_build(reg):
    gadget = reg.build({"type": "gadget", "size": 3})
    assert type(gadget).__name__ == "Gadget"
    assert (gadget.size, gadget.colour) == (3, "red")
    # a function registered without a name lives under its __name__
    assert "make_gizmo" in reg
    assert reg.build({"type": "make_gizmo", "count": 4}) == {"count": 4, "scale": 2.0}
    # a bare string is a config with only a type
    assert reg.build("gadget").size == 1
    assert reg.names() == ["gadget", "make_gizmo"]
    assert reg.get("gadget") is type(gadget)


def test_build_does_not_modify_the_config(reg):
    cfg = {"type": "gadget", "size": 5}
    reg.build(cfg)
    assert cfg == {"type": "gadget", "size": 5}


def test_build_with_extra_kwargs(reg):
    gadget = reg.build({"type": "gadget", "size": 2}, owner="me", colour="blue")
    assert (gadget.size, gadget.colour, gadget.owner) == (2, "blue", "me")
    assert reg.build({"type": "make_gizmo"}, count=7) == {"count": 7, "scale": 2.0}


def test_extra_kwarg_is_checked_like_a_config_key(reg):
    with pytest.raises(RegistryError, match="takes no argument 'ownr'.*did you mean 'owner'"):
        reg.build({"type": "gadget"}, ownr="me")


def test_unknown_type_names_registry_lists_names_and_suggests(reg):
    with pytest.raises(RegistryError) as info:
        reg.build({"type": "gadgte"})
    msg = str(info.value)
    assert msg.startswith("WIDGETS:")
    assert "unknown type 'gadgte'" in msg
    assert "did you mean 'gadget'?" in msg
    assert "available: gadget, make_gizmo" in msg
    # a KeyError whose str() is not quoted
    assert isinstance(info.value, KeyError)
    assert not msg.startswith("'")


def test_unknown_type_without_close_match_has_no_hint(reg):
    with pytest.raises(RegistryError) as info:
        reg.get("zzzzzzzz")
    assert "did you mean" not in str(info.value)
    assert "available: gadget, make_gizmo" in str(info.value)


def test_empty_registry_says_none_available():
    with pytest.raises(RegistryError, match=r"EMPTY: unknown type 'x'; available: \(none\)"):
        Registry("EMPTY").get("x")


def test_config_without_type_is_an_error(reg):
    with pytest.raises(RegistryError, match="WIDGETS: a component config needs a 'type' key"):
        reg.build({"size": 3})
    with pytest.raises(RegistryError, match="needs a 'type' key"):
        reg.build(42)


def test_unknown_constructor_argument_names_it_and_suggests(reg):
    with pytest.raises(RegistryError) as info:
        reg.build({"type": "gadget", "colur": "blue"})
    msg = str(info.value)
    assert "WIDGETS: 'gadget' takes no argument 'colur'" in msg
    assert "did you mean 'colour'?" in msg
    assert "it accepts: size, colour, owner" in msg


def test_unknown_function_argument_names_it_and_suggests(reg):
    with pytest.raises(RegistryError, match=r"'make_gizmo' takes no argument 'scael' \(did you mean 'scale'\?\)"):
        reg.build({"type": "make_gizmo", "count": 1, "scael": 3})


def test_var_keyword_constructor_takes_anything():
    reg = Registry("OPEN")

    @reg.register("open")
    def open_(**kwargs):
        return kwargs

    assert reg.build({"type": "open", "a": 1}, b=2) == {"a": 1, "b": 2}


def test_arguments_follow_kwargs_up_the_bases_with_their_defaults():
    reg = Registry("PARTS")

    class Base:
        def __init__(self, weight: float = 1.0):
            self.weight = weight

    @reg.register("child")
    class Child(Base):
        def __init__(self, gamma=2.0, **kwargs):
            super().__init__(**kwargs)

    @reg.register("plain")
    class Plain:          # no __init__ of its own: object's takes nothing
        pass

    @reg.register("open")
    def open_(size, **kwargs):
        return kwargs

    assert [(p.name, p.default) for p in reg.arguments("child")] == [("gamma", 2.0), ("weight", 1.0)]
    assert reg.arguments("plain") == []
    with pytest.raises(RegistryError, match="'plain' takes no argument 'size'; it accepts: \\(nothing\\)"):
        reg.build({"type": "plain", "size": 1})
    assert reg.arguments("open") is None          # a function with **kwargs takes anything


def test_duplicate_registration_fails_unless_override(reg):
    with pytest.raises(RegistryError) as info:
        @reg.register("gadget")
        class Other:
            pass
    msg = str(info.value)
    assert "WIDGETS: 'gadget' is already registered" in msg
    assert "Gadget" in msg and "override=True" in msg
    assert reg.get("gadget").__name__ == "Gadget"          # the first one stays

    @reg.register("gadget", override=True)
    class Replacement:
        """The replacement."""

    assert reg.get("gadget") is Replacement
    assert isinstance(reg.build("gadget"), Replacement)


def test_registering_the_same_object_twice_is_harmless(reg):
    gadget_cls = reg.get("gadget")
    assert reg.register("gadget")(gadget_cls) is gadget_cls
    assert reg.get("gadget") is gadget_cls


def test_register_returns_the_object_unchanged():
    reg = Registry("R")

    def f():
        return 1

    assert reg.register("f")(f) is f


def test_describe_gives_first_docstring_lines(reg):
    @reg.register("plain")
    def plain():
        pass

    assert reg.describe() == {"gadget": "A gadget with a size.",
                              "make_gizmo": "Build a gizmo description.",
                              "plain": ""}


def test_describe_joins_a_wrapped_first_paragraph():
    reg = Registry("R")

    @reg.register("wrapped")
    class Wrapped:
        """A first sentence that wraps
        onto a second line.

        Details not shown."""

    assert reg.describe() == {"wrapped": "A first sentence that wraps onto a second line."}


def test_describe_does_not_borrow_the_base_class_docstring():
    reg = Registry("R")

    class Base:
        """Base class: not a description of the subclass."""

    @reg.register("undocumented")
    class Undocumented(Base):
        pass

    assert reg.describe()["undocumented"] == ""


def test_closest():
    assert closest("darknet35", ["darknet53", "darknet_tiny"]) == "darknet53"
    assert closest("qqq", ["darknet53"]) is None


def test_builtin_registries_hold_the_builtins():
    assert set(ALL) == {"BACKBONES", "NECKS", "HEADS", "ASSIGNERS", "LOSSES", "NMS", "DATASETS",
                        "TRANSFORMS", "OPTIMIZERS", "LR_SCHEDULES", "METRICS", "HOOKS"}
    assert {"darknet53", "darknet_tiny"} <= set(ALL["BACKBONES"].names())
    assert {"xy_bce", "wh_l1", "objectness_bce", "class_bce"} <= set(LOSSES.names())
    assert "best_anchor" in ALL["ASSIGNERS"] and "class_aware" in ALL["NMS"]
    assert {"voc07", "voc"} <= set(ALL["METRICS"].names())
    for name, registry in ALL.items():
        assert registry.name == name
        for entry, doc in registry.describe().items():
            assert doc, f"{name}.{entry} has no description"


def test_builtin_component_with_unknown_argument_is_named():
    with pytest.raises(RegistryError, match=r"'darknet_tiny' takes no argument 'widht' \(did you mean 'width'\?\)"):
        ALL["BACKBONES"].build({"type": "darknet_tiny", "widht": 0.5})


def test_misspelled_argument_of_var_keyword_builtin_is_named():
    with pytest.raises(RegistryError, match=r"noobj_weigth.*did you mean 'noobj_weight'"):
        LOSSES.build({"type": "objectness_bce", "noobj_weigth": 0.5})


def test_config_key_clashing_with_an_extra_is_handled(reg):
    try:
        gadget = reg.build({"type": "gadget", "owner": "recipe"}, owner="caller")
    except RegistryError as err:
        assert "owner" in str(err)
    else:
        assert gadget.owner == "caller"
