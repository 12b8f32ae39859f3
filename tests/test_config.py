"""Settings: every value from a TOML file or the command line is type- and range-checked where it is
set, so a wrong value is one clear line, never a traceback later, and no value can switch hiding off."""

from __future__ import annotations

import dataclasses

import pytest

from streamanon.cli import main
from streamanon.config import RANGES, AnonymizerConfig, load_config
from streamanon.errors import UserError


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("replace.margin", -0.9, r"replace.margin must be in \[0, 2\], got -0.9"),  # would leave faces visible
        ("replace.margin", float("nan"), "replace.margin must be a number, got nan"),
        ("track.min_hits", 3, "track.min_hits must be 1"),  # would show a new face unaltered for 2 frames
        ("detect.threshold", "high", "detect.threshold must be a number, got 'high'"),
        ("detect.threshold", 1, r"detect.threshold must be in \(0, 1\)"),
        ("detect.scale", "auto", "detect.scale must be a number or unset"),
        ("track.max_missed", "many", "track.max_missed must be a whole number"),
        ("detect.every", 2.5, "detect.every must be a whole number"),
        ("generate.guard_candidates", "x", "generate.guard_candidates must be a whole number"),
        ("replace.solid_color", [300, -1, 2], r"replace.solid_color must be three values in \[0, 255\]"),
        ("replace.solid_color", [1, 2], "replace.solid_color must be a list of 3 whole numbers"),
        ("replace.solid_color", "red", "replace.solid_color must be a list of 3 whole numbers"),
        ("smooth.enabled", "no", "smooth.enabled must be true or false, got 'no'"),
        ("smooth.enabled", 0, "smooth.enabled must be true or false"),
        ("device", 0, "device must be a string"),
        ("device", "tpu", "device must be cpu, cuda or cuda:N"),
        ("generate.backend", "fast", "generate.backend must be one of 'auto', 'eager'"),
        ("photometric.shading_downsample", 3, "photometric.shading_downsample must be 1, 2 or 4"),
        ("encode.crf", 99, r"encode.crf must be in \[0, 63\]"),
    ],
)
def test_a_wrong_value_is_refused_with_its_setting_and_what_it_must_be(key, value, message):
    with pytest.raises(UserError, match=message):
        load_config(overrides={key: value})


def test_good_values_are_taken_and_whole_numbers_serve_as_numbers():
    config = load_config(overrides={"replace.margin": 1, "replace.solid_color": [1, 2, 3], "device": "cuda:1",
                                    "detect.scale": None, "generate.guard_background": None})  # fmt: skip
    assert config.replace.margin == 1.0 and isinstance(config.replace.margin, float)
    assert config.replace.solid_color == (1, 2, 3) and config.device == "cuda:1" and config.detect.scale is None


def test_every_default_is_within_its_own_range():
    config = AnonymizerConfig()
    for key, (ok, bound) in RANGES.items():
        section, name = key.split(".")
        assert ok(getattr(getattr(config, section), name)), f"default of {key} is not {bound}"
        # Each bound names a real setting (a typo would check nothing).
        assert name in {f.name for f in dataclasses.fields(getattr(config, section))}


def test_a_config_file_with_a_bad_value_stops_the_command_in_one_line_before_any_output(tmp_path, capsys):
    settings = tmp_path / "settings.toml"
    settings.write_text('[replace]\nmargin = -0.9\n')
    image = tmp_path / "in.png"
    image.write_bytes(b"")  # never read: the settings fail first
    out = tmp_path / "out.png"
    code = main(["file", str(image), str(out), "--config", str(settings), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "\n" not in err and "replace.margin must be in [0, 2]" in err
    assert not out.exists()
    settings.write_text('[detect]\nthreshold = "high"\n')
    code = main(["file", str(image), str(out), "--config", str(settings), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "detect.threshold must be a number" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--margin", "nan"], "replace.margin must be a number"),
        (["--threshold", "1"], "--threshold"),
        (["--device", "tpu"], "device must be cpu, cuda or cuda:N"),
    ],
)
def test_command_line_values_meet_the_same_checks(tmp_path, capsys, args, message):
    code = main(["file", str(tmp_path / "in.mp4"), str(tmp_path / "out.mp4"), *args, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and message in err and "internal error" not in err


def test_override_from_text_reads_toml_values_and_plain_text():
    from streamanon.config import override_from_text

    assert override_from_text("detect.scale=2") == ("detect.scale", 2)
    assert override_from_text("detect.rotations=[0, 90]") == ("detect.rotations", [0, 90])
    assert override_from_text(" detect.refind_lost =false") == ("detect.refind_lost", False)
    assert override_from_text("encode.preset=slow") == ("encode.preset", "slow")
    for bad in ("detect.scale", "=2"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            override_from_text(bad)


def test_the_mode_set_twice_in_a_file_is_refused_not_quietly_resolved(tmp_path):
    settings = tmp_path / "twice.toml"
    settings.write_text('mode = "blur"\n[replace]\nmode = "pixelate"\n')
    with pytest.raises(UserError, match="sets the mode twice"):
        load_config(settings)
    settings.write_text('mode = "blur"\nreplace = 3\n')
    with pytest.raises(UserError, match="'replace' must be a table"):
        load_config(settings)
    settings.write_text('mode = "pixelate"\n[replace]\nmargin = 0.3\n')  # the shorthand beside other keys
    config = load_config(settings)
    assert (config.replace.mode, config.replace.margin) == ("pixelate", 0.3)
