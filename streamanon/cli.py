"""Command line: ``streamanon COMMAND ...``.

Commands:

* ``file``: anonymize a video, an image or a folder of images (this module).
* ``stream``: anonymize a live source into a live sink (:mod:`streamanon.live.cli`).
* ``eval``: clip-level privacy and utility metrics, with JSON/console/HTML reports
  (:mod:`streamanon.metrics.cli`).
* ``bench``: per-stage latency per frame and per face, and the end-to-end comparison with
  deface (:mod:`streamanon.bench.cli`).
* ``export``: build the generator's TensorRT engines once per machine
  (:mod:`streamanon.generate.export_cli`).
* ``train prepare``, ``train run``: build the generator's training set and train the U-Net GAN;
  ``train appearance``: fit the shipped appearance generator; ``train detail``: fit its fine detail
  (sharpening and skin grain) to real faces' spectra; ``train validate``: its acceptance
  figures on held-out faces; ``train card``: its model card (:mod:`streamanon.train.cli`);
  ``train emotion``: the emotion classifier used by ``eval`` (:mod:`streamanon.train.emotion`).

Every failure reaches the user as one line on stderr and a non-zero exit code:
1 for a problem with the input or environment, 2 for a bad command line, 130 for Ctrl-C,
143 for SIGTERM and 129 for SIGHUP during ``file`` (which then leaves no partial output).
Set ``STREAMANON_DEBUG=1`` to get full tracebacks instead.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator

import click

from .config import LANDMARK_BACKENDS, MODES, load_config, rotations_from_text
from .errors import UserError

EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process killed by Ctrl-C
# Frame rate of a --sequence of images when --fps does not say (a common camera rate).
SEQUENCE_FPS = 30.0


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like Ctrl-C (temporary outputs deleted on the way).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"{self.name} received")


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` while the block runs.

    Their default action kills the process at once, leaving ``atomic_output``'s hidden
    temporary file behind; raised as an exception they unwind the way Ctrl-C does. Only
    signals still at their default action are taken: one ignored by the caller (``nohup``
    ignores SIGHUP) or handled by an embedding application keeps its handler. Handlers can
    only be installed from the main thread. Once one signal was turned into the exception,
    further ones are ignored, so that they cannot interrupt the clean-up; SIGKILL still ends
    the process at once. ``streamanon stream`` installs its own handlers (it finishes its
    output instead), so this is used by ``file`` only.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = ("SIGTERM", "SIGHUP")
    signals = [getattr(signal, name) for name in names if hasattr(signal, name)]
    raised: list[int] = []

    def handler(signum, _frame) -> None:
        if raised:
            return
        raised.append(signum)
        raise Terminated(signum)

    previous = {}
    for sig in signals:
        if signal.getsignal(sig) is signal.SIG_DFL:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def parse_rotations(_ctx, _param, value: str | None) -> tuple[int, ...] | None:
    """``--detect-rotations``: ``all`` or comma-separated angles -> a tuple of whole degrees."""
    if value is None:
        return None
    try:
        return rotations_from_text(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def pipeline_options(command):
    """Options shared by every command that runs the anonymization pipeline (file, stream)."""
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file."),
        click.option("--mode", type=click.Choice(MODES), help="How faces are replaced [default: blur]."),
        click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
                     help="Detection score threshold [0.4]."),
        click.option(
            "--detect-scale",
            type=click.FloatRange(0.05, 4.0),
            help="Resize factor before detection (default: automatic, long side about 1280 px).",
        ),
        click.option(
            "--detect-every",
            type=click.IntRange(1, 1000),
            help="Search the whole frame every N frames, in between only around tracked faces [1].",
        ),
        click.option(
            "--detect-rotations",
            callback=parse_rotations,
            metavar="ANGLES",
            help="Also search the frame turned by these angles, e.g. 0,90,180,270 or 'all' (faces at any roll: "
            "overhead cameras, people lying down; one detection run per angle) [0].",
        ),
        click.option("--max-missed", type=click.IntRange(0, 1000), help="Frames a lost face stays hidden [12]."),
        click.option("--margin", type=click.FloatRange(0.0, 2.0), help="Grow each face box by this fraction [0.15]."),
        click.option("--no-smooth", is_flag=True, default=False, help="Disable One-Euro smoothing."),
        click.option("--no-relight", is_flag=True, default=False, help="Skip relighting (generate mode)."),
        click.option("--no-laplacian", is_flag=True, default=False, help="Skip Laplacian refinement."),
        click.option("--no-color-transfer", is_flag=True, default=False, help="Skip YCbCr colour transfer."),
        click.option("--no-match-noise", is_flag=True, default=False,
                     help="Paste generated faces without the camera noise measured around them."),
        click.option("--weights", type=click.Path(dir_okay=False), help="Generator weights file."),
        click.option("--seed", type=int, help="Seed of the per-track fake identities [0]."),
        click.option(
            "--guard-candidates",
            type=click.IntRange(0, 1024),
            help="Fake identities the identity guard may try per new face; 0 = no guard [32].",
        ),
        click.option(
            "--landmarks-backend",
            type=click.Choice(LANDMARK_BACKENDS),
            help="Who runs dlib's landmark predictor: dlib, or torch (the same trees, all faces of a frame at "
            "once) [auto: torch on a GPU].",
        ),
        click.option("--device", type=str, help="cpu or cuda[:N] [cpu]."),
        click.option("--codec", type=str, help="Output video codec [libx264]."),
        click.option("--crf", type=click.IntRange(0, 63), help="Output quality, lower is better [18]."),
        click.option("--preset", type=str, help="Encoder preset [veryfast]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


# Options that only generate mode reads.
GENERATE_ONLY_OPTIONS = ("weights", "seed", "guard_candidates", "landmarks_backend", "no_relight", "no_laplacian",
                         "no_color_transfer", "no_match_noise")  # fmt: skip


def config_from_options(opts: dict):
    """Build the AnonymizerConfig from the shared pipeline options."""
    overrides = {
        "replace.mode": opts.get("mode"),
        "detect.threshold": opts.get("threshold"),
        "detect.scale": opts.get("detect_scale"),
        "detect.every": opts.get("detect_every"),
        "detect.rotations": opts.get("detect_rotations"),
        "track.max_missed": opts.get("max_missed"),
        "replace.margin": opts.get("margin"),
        "generate.weights": opts.get("weights"),
        "generate.seed": opts.get("seed"),
        "generate.guard_candidates": opts.get("guard_candidates"),
        "landmarks.backend": opts.get("landmarks_backend"),
        "device": opts.get("device"),
        "encode.codec": opts.get("codec"),
        "encode.crf": opts.get("crf"),
        "encode.preset": opts.get("preset"),
    }
    for flag, key in (
        ("no_smooth", "smooth.enabled"),
        ("no_relight", "photometric.relight"),
        ("no_laplacian", "photometric.laplacian"),
        ("no_color_transfer", "photometric.color_transfer"),
        ("no_match_noise", "generate.match_noise"),
    ):
        if opts.get(flag):
            overrides[key] = False
    config = load_config(opts.get("config_path"), overrides)
    if config.mode != "generate":
        given = [f"--{name.replace('_', '-')}" for name in GENERATE_ONLY_OPTIONS
                 if opts.get(name) is not None and opts.get(name) is not False]  # --seed 0 is given too
        if given:  # taken, but nothing uses them: say so rather than let them look applied
            logging.getLogger(__name__).warning("%s: used in generate mode only; this run hides faces by %s",
                                                ", ".join(given), config.mode)  # fmt: skip
    return config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="streamanon")
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
def cli(verbose: bool) -> None:
    """Anonymize every face in videos, images and live streams."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@cli.command("file")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@pipeline_options
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
@click.option(
    "--skip-existing",
    is_flag=True,
    help="Leave outputs that exist alone and do the rest (resume a folder; outputs are never half-written).",
)
@click.option(
    "--drop-unsupported-streams",
    "drop_unsupported",
    is_flag=True,
    help="Leave out streams (e.g. subtitles) the output container cannot hold instead of failing.",
)
@click.option(
    "--sequence",
    is_flag=True,
    help="SRC is a folder of video frames (each subfolder one camera, frames in natural name order): "
    "faces are tracked across them, stay hidden where the detector misses them, and keep one fake identity.",
)
@click.option(
    "--fps",
    "sequence_fps",
    type=click.FloatRange(0.1, 1000.0),
    help="With --sequence: the frames' rate, for tracking and smoothing [30].",
)
@click.option(
    "--faces-log",
    type=click.Path(path_type=Path),
    metavar="FILE.jsonl",
    help="Also write what was hidden where, frame by frame, to this JSON Lines file (boxes, tracks, how; "
    "generate mode: the landmarks each new face was given).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line.")
def file_command(src: Path, dst: Path, overwrite: bool, skip_existing: bool, drop_unsupported: bool,
                 sequence: bool, sequence_fps: float | None, faces_log: Path | None, quiet: bool,
                 **opts) -> None:  # fmt: skip
    """Anonymize a video, an image, or a folder of images and videos SRC into DST.

    Videos keep their frame count, timestamps, rotation and audio (copied bit-exact). A folder's
    outputs mirror its tree; each video in it is its own clip, and a file that fails is named and
    the rest go on. The images of a folder are unrelated photos unless --sequence says they are
    frames of a video.
    """
    from .files import anonymize_file

    if sequence_fps is not None and not sequence:
        raise click.UsageError("--fps is the frame rate of a --sequence; add --sequence or leave it out")
    if overwrite and skip_existing:
        raise click.UsageError("--overwrite replaces existing outputs and --skip-existing leaves them: choose one")
    config = config_from_options(opts)
    with _terminate_cleanly():
        summary = anonymize_file(
            src, dst, config, overwrite=overwrite, skip_existing=skip_existing,
            progress=not quiet and sys.stderr.isatty(), drop_unsupported=drop_unsupported,
            sequence_fps=(sequence_fps or SEQUENCE_FPS) if sequence else None,
            report=None if quiet else lambda line: click.echo(f"streamanon: {line}", err=True),
            faces_log=faces_log,
        )
    if not quiet:
        click.echo(f"streamanon: {summary.line()}", err=True)


def _register_optional_commands() -> None:
    """Attach the commands that live in other modules.

    Each is imported on its own so that a half-installed extra (no torch, say) hides only the
    commands that need it and never breaks ``streamanon file``.
    """
    log = logging.getLogger(__name__)
    if "train" in cli.commands:  # already done (main() called twice in one process)
        return

    @cli.group("train")
    def train_group() -> None:
        """Prepare data for and train the generator and the emotion classifier."""

    for parent, name, module, attribute in (
        (cli, "eval", "streamanon.metrics.cli", "eval_command"),
        (cli, "stream", "streamanon.live.cli", "stream_command"),
        (cli, "bench", "streamanon.bench.cli", "bench_command"),
        (cli, "export", "streamanon.generate.export_cli", "export_command"),
        (train_group, "prepare", "streamanon.train.cli", "prepare_command"),
        (train_group, "run", "streamanon.train.cli", "run_command"),
        (train_group, "appearance", "streamanon.train.cli", "appearance_command"),
        (train_group, "detail", "streamanon.train.cli", "detail_command"),
        (train_group, "validate", "streamanon.train.cli", "validate_command"),
        (train_group, "card", "streamanon.train.cli", "card_command"),
        (train_group, "emotion", "streamanon.train.emotion", "emotion_command"),
    ):
        try:
            command = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            log.debug("command '%s' unavailable: %s", name, exc)
            continue
        parent.add_command(command, name)


def _one_line(exc: BaseException) -> str:
    """An error's message on one line: the promise of every failure, whatever library wrote it."""
    return " ".join(str(exc).split())


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the CLI and turns every failure into one line and an exit code."""
    debug = os.environ.get("STREAMANON_DEBUG") == "1"
    try:
        _register_optional_commands()  # heavy imports: a Ctrl-C during them is still one line
        cli.main(args=argv, prog_name="streamanon", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("streamanon: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        click.echo(f"streamanon: error: {exc.format_message()} (see 'streamanon --help')", err=True)
        return EXIT_USAGE
    except UserError as exc:
        if debug:
            raise
        click.echo(f"streamanon: error: {_one_line(exc)}", err=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        click.echo("streamanon: interrupted; no partial output was left", err=True)
        return EXIT_INTERRUPTED
    except Terminated as exc:
        # 128 + the signal number, as for Ctrl-C (130 = 128 + SIGINT) and as a shell reports a
        # process the signal killed: supervisors that look for 143 after a SIGTERM still see it.
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            click.echo(f"streamanon: {exc.name} received; stopped, no partial output was left", err=True)
        return 128 + exc.signum
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if debug:
            raise
        click.echo(
            f"streamanon: internal error: {type(exc).__name__}: {_one_line(exc)} (set STREAMANON_DEBUG=1 for details)",
            err=True,
        )
        return EXIT_INTERNAL
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
