"""``python -m leod`` (or ``leod``): commands that work on what the pipeline produced.

compare, register, ui, import-rvt, export, detect and visualize; each command's help text
below says what it does. Pipeline stages live in ``stages/`` and run through ``dvc repro``;
these commands only read their results. Errors are one ``error:`` line and exit status 2,
as for the stages.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from leod.config import load_params
from leod.plumbing.errors import ConfigError, LeodError
from leod.plumbing.stage import report_error

DEFAULT_NAME = "leod-detector"
DEFAULT_ALIAS = "champion"
# what a models:/NAME@ALIAS URI can carry: no '/', '@' or spaces; MLflow reserves the
# aliases 'latest' and 'v<number>'
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,255}")
_ALIAS = re.compile(r"[A-Za-z0-9_-]{1,255}")
_RESERVED_ALIAS = re.compile(r"latest|v\d+", re.IGNORECASE)


def check_registry_names(name: str, alias: str) -> None:
    """Reject a model name or alias that a ``models:/NAME@ALIAS`` URI cannot carry."""
    if not _MODEL_NAME.fullmatch(name):
        raise ConfigError(
            f"--name {name!r}: a registered model name is letters, digits, '.', '_' and '-' "
            "(no '/', '@' or spaces), starting with a letter or digit"
        )
    if not _ALIAS.fullmatch(alias) or _RESERVED_ALIAS.fullmatch(alias):
        raise ConfigError(
            f"--alias {alias!r}: an alias is letters, digits, '_' and '-', and not 'latest' or 'v<number>'"
        )


def cmd_compare(args: argparse.Namespace) -> None:
    from leod.plumbing.compare import compare

    print(compare(Path(args.repo), args.sources, args.metrics))
    if args.next_steps:
        from leod.plumbing.compare import next_steps

        repo = Path(args.repo)
        print(f"\n{next_steps(repo, load_params(repo / 'params.yaml').tracking.experiment)}")


def cmd_register(args: argparse.Namespace) -> None:
    check_registry_names(args.name, args.alias)
    from leod.plumbing.registry import check_sequence, register_model

    params = load_params(args.params)
    model_dir = Path(args.model or f"models/{params.round_order()[-1] if params.rounds else 'r0'}")
    seq = check_sequence(Path(args.data))  # bad check data fails before the registry is touched
    done = register_model(
        model_dir, args.name, args.alias, params.tracking.experiment, seq, args.check_frames
    )
    print(
        f"registered {model_dir} as {done.name} version {done.version}; it loads back through MLflow "
        f"and predicts what the pipeline predicts on {min(args.check_frames, seq.num_frames)} frames "
        f"of {seq.name}; alias '{done.alias}' now points at it ({done.uri})"
    )


def cmd_ui(args: argparse.Namespace) -> None:
    from leod.plumbing.mlflow_store import runs_url
    from leod.plumbing.tracking import ensure_store

    experiment = args.experiment or load_params(args.params).tracking.experiment
    uri, experiment_id = ensure_store(experiment)
    if uri.startswith(("http://", "https://")):  # a tracking server is its own UI
        print(f"runs of experiment '{experiment}': {runs_url(experiment_id, uri)}")
        return
    url = runs_url(experiment_id, f"http://{args.host}:{args.port}")
    print(f"MLflow UI on {uri}\nruns of experiment '{experiment}': {url}\n(Ctrl-C stops it)", flush=True)
    command = ["mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    command += ["--workers", str(args.workers)]
    os.execv(sys.executable, [sys.executable, "-m", *command])


HELP = """\
Commands around the pipeline: dvc repro runs the stages (stages/*.py), these look at what
they produced and move models in and out of it.

  compare     the round table (test AP, pseudo-label precision/recall, gap closed)
  register    publish a model to the MLflow registry under an alias and check it loads back
  ui          start MLflow's UI on the project's store and print the runs table's address
  import-rvt  a published RVT/LEOD checkpoint as a model folder every stage accepts
  export      a model folder as ONNX (one recurrent step, LSTM states as inputs/outputs)
  detect      run a model over any event recording (DAT, EVT 2.0/3.0 RAW, HDF5)
  visualize   a dataset sequence: GT | pseudo labels | predictions side by side (video)

Examples:
  python -m leod compare                       # the workspace's metrics/
  python -m leod compare HEAD~1 workspace      # a commit beside the workspace
  python -m leod compare my-exp                # a DVC experiment (dvc exp show lists them)
  python -m leod register --alias champion     # the last round's model
  python -m leod ui                            # then open the printed address
  python -m leod export --model models/r2 --out r2.onnx
  python -m leod detect recording.raw --model models/r2 --out boxes.npy --video boxes.mp4
  python -m leod visualize --sequence synth_train_0003 --pseudo pseudo/r1/labels.npz \\
      --model models/r1 --out r1.mp4
  python -m leod import-rvt rvt-t.ckpt --out models/imported/rvt-t-gen1 --preset tiny --dataset gen1

'python -m leod COMMAND --help' describes each command.

Errors are one 'error:' line and exit status 2, as for the stages.
"""


def cmd_import_rvt(args: argparse.Namespace) -> None:
    from leod.interop.rvt_import import import_rvt

    model = import_rvt(Path(args.checkpoint), Path(args.out), args.preset, args.dataset)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"imported {args.checkpoint} as RVT-{args.preset} ({args.dataset}, {params:,} params) into {args.out}"
    )


def cmd_export(args: argparse.Namespace) -> None:
    from leod.export.onnx import OPSET, check_onnx, export_onnx, model_input_size
    from leod.training.model_files import load_model

    model, info = load_model(Path(args.model))
    height, width = model_input_size(info, Path(args.params))
    out = Path(args.out)
    export_onnx(model, out, height, width, raw=args.raw)
    diff = check_onnx(out, model, height, width, raw=args.raw)
    what = "raw head" if args.raw else "decoded boxes"
    shape = f"(batch, {model.cfg.in_channels}, {height}, {width})"
    print(
        f"wrote {out} (ONNX opset {OPSET}, events {shape} -> {what}; {out.stat().st_size / 1e6:.1f} MB); "
        f"onnxruntime vs PyTorch on 2 steps: max abs diff {diff:.2e}"
    )


def cmd_detect(args: argparse.Namespace) -> None:
    import torch

    from leod.detect.recording import DetectOptions, detect_recording, fix_malloc_mmap_threshold
    from leod.plumbing.atomic import check_writable, save_npy
    from leod.training.model_files import load_model
    from leod.visual.clip import DetectionFrames
    from leod.visual.video import video_target, video_writer

    video = video_target(args.video) if args.video else None  # outputs are checked before any work
    check_writable(args.out)
    fix_malloc_mmap_threshold()
    model, info = load_model(Path(args.model))
    model = model.to(torch.device(args.device))
    opts = DetectOptions(
        window_ms=args.window_ms,
        step_ms=args.step_ms,
        conf_threshold=args.conf,
        nms_iou=args.nms_iou,
        half_resolution=args.half_resolution,
        start_us=None if args.start_ms is None else round(args.start_ms * 1000),
        end_us=None if args.end_ms is None else round(args.end_ms * 1000),
        height=args.height,
        width=args.width,
    )
    recording = Path(args.recording)
    with contextlib.ExitStack() as stack:
        hook = None
        if video is not None:
            writer = stack.enter_context(video_writer(video, fps=1000 / (args.step_ms or args.window_ms)))
            classes = info.get("classes") or []
            hook = DetectionFrames(writer, classes, recording.name)
        done = detect_recording(recording, model, info, opts, progress=not args.no_progress, on_frame=hook)
    save_npy(args.out, done.boxes)  # after the video is complete: a failed video leaves neither
    rate = f"{done.events / done.seconds:,.0f} events/s, {done.frames / done.seconds:.1f} frames/s"
    print(f"wrote {args.out}: {len(done.boxes)} boxes in {done.frames} windows ({rate})")
    if video is not None:
        print(
            f"wrote {video}"
            + ("" if video.suffix == Path(args.video).suffix else " (imageio-ffmpeg missing: GIF)")
        )


VISUALIZE_HELP = """\
A dataset sequence as a video: ground truth (green), a round's pseudo labels (blue; thin:
ignore regions) and a model's predictions (red), side by side, one frame per window.

Example:
  python -m leod visualize --data data/preprocessed --sequence synth_train_0003 \\
      --pseudo pseudo/r1/labels.npz --model models/r1 --out r1.mp4

Pseudo labels cover the train split only; without --pseudo and --model only the ground truth
is drawn. The model runs from the sequence's first frame so its state is as in evaluation.
"""


def cmd_visualize(args: argparse.Namespace) -> None:
    from leod.visual.clip import ClipRange, render_clip
    from leod.visual.video import video_target

    out = video_target(args.out)
    span = ClipRange(args.start, args.frames)
    data = Path(args.data)
    overlay = None
    if args.model:
        from leod.visual.predictions import model_overlay

        overlay = model_overlay(Path(args.model), data, args.sequence, span, args.score, args.device)
    pseudo = Path(args.pseudo) if args.pseudo else None
    n = render_clip(data, args.sequence, out, span, pseudo, overlay)
    print(
        f"wrote {out}: {n} frames of {args.sequence}"
        + ("" if out.suffix == Path(args.out).suffix else " (GIF)")
    )


_COMPARE_HELP = """\
The round table (test AP, AP50, pseudo-label precision/recall at IoU 0.5, gap closed, gate)
of the workspace, of git revisions or of DVC experiments, read from their metrics/ folder
only.

Examples:
  python -m leod compare                        # the workspace
  python -m leod compare HEAD workspace         # the last commit beside the workspace
  python -m leod compare workspace obj06 obj08  # DVC experiments (dvc exp show lists them)
"""

_REGISTER_HELP = """\
Log a model folder to MLflow as a pyfunc model, register a new version, load it back and
check that it predicts on --check-frames test frames exactly what the pipeline's own
inference predicts; only then point the alias at it.

Example:
  python -m leod register --model models/r2 --name leod-detector --alias champion
"""

_IMPORT_HELP = """\
Turn a published RVT or LEOD Lightning checkpoint (keys 'mdl.*') into a model folder
(model.pt + model.json) that every stage and command accepts. Nothing in the file is run:
tensors and plain containers are rebuilt, any other pickled object becomes inert. Put it
under models/imported/ to use it as selftrain.teacher or train.init_from (docs/teacher.md).

Example:
  python -m leod import-rvt rvt-t.ckpt --out models/imported/rvt-t-gen1 --preset tiny --dataset gen1
"""

_EXPORT_HELP = """\
Export one recurrent step of a model folder as ONNX: inputs the event histograms
(batch, 20, H, W) and the LSTM states (zeros start a sequence), outputs the decoded boxes
(or the raw head with --raw) and the new states. The file is checked against PyTorch with
onnxruntime before the command ends.

Examples:
  python -m leod export --model models/r2 --out r2.onnx
  python -m leod export --model models/rvt-t --format onnx --out rvt-t.onnx --raw
"""

_DETECT_HELP = """\
Stream an event recording of any length through a model, window by window with its
recurrent state carried, in bounded memory. Boxes are written in sensor pixels in the
Prophesee evaluator dtype (t, x, y, w, h, class_id, track_id, class_confidence).

Examples:
  python -m leod detect recording.raw --model models/r2 --out boxes.npy
  python -m leod detect drive.dat --model models/rvt-t --out boxes.npy --start-ms 1000 --end-ms 61000
"""

_UI_HELP = """\
Start MLflow's UI on the store the stages log to (MLFLOW_TRACKING_URI, else mlflow.db at
the repository root) and print the address that opens the experiment's runs table with
the test AP, best val AP and pseudo-label precision/recall columns. MLflow 3 opens an
experiment on its GenAI traces view unless the address says workflowType=machine_learning
(or the "Model training" switch at the top left was used once in that browser).
When MLFLOW_TRACKING_URI names a tracking server, only its address is printed.

Example:
  python -m leod ui --port 5000
"""


def _command(
    sub: argparse._SubParsersAction,
    name: str,
    func: Callable[[argparse.Namespace], None],
    description: str,
    summary: str,
) -> argparse.ArgumentParser:
    """Subcommand ``name`` running ``func``; its ``--help`` prints ``description`` as written."""
    c = sub.add_parser(
        name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    c.set_defaults(func=func)
    return c


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leod", description=HELP, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    c = _command(
        sub, "compare", cmd_compare, _COMPARE_HELP, "round table of the workspace, commits or DVC experiments"
    )
    c.add_argument(
        "sources", nargs="*", help="'workspace' (default), a git revision or a DVC experiment name"
    )
    c.add_argument("--repo", default=".", help="repository root (default: .)")
    c.add_argument("--metrics", default="metrics", help="metrics folder inside the repository")
    c.add_argument(
        "--next-steps", action="store_true", help="then print the report path and how to open MLflow"
    )

    r = _command(
        sub, "register", cmd_register, _REGISTER_HELP, "publish a model to the MLflow registry under an alias"
    )
    r.add_argument("--model", help="model folder (default: the last round of params.yaml, models/<rK>)")
    r.add_argument("--name", default=DEFAULT_NAME, help=f"registered model name (default: {DEFAULT_NAME})")
    r.add_argument(
        "--alias", default=DEFAULT_ALIAS, help=f"alias to point at the new version ({DEFAULT_ALIAS})"
    )
    r.add_argument("--params", default="params.yaml", help="params file (MLflow experiment, rounds)")
    r.add_argument(
        "--data", default="data/preprocessed", help="preprocessed data (test frames for the check)"
    )
    r.add_argument("--check-frames", type=int, default=20, help="test frames compared after loading back")

    i = _command(
        sub, "import-rvt", cmd_import_rvt, _IMPORT_HELP, "an RVT/LEOD Lightning checkpoint as a model folder"
    )
    i.add_argument("checkpoint", help="the .ckpt file (RVT or LEOD, keys 'mdl.*')")
    i.add_argument("--out", required=True, help="model folder to write (model.pt + model.json)")
    i.add_argument("--preset", required=True, choices=["tiny", "small", "base"], help="RVT-T/S/B")
    i.add_argument("--dataset", required=True, choices=["gen1", "gen4"], help="what it was trained on")

    e = _command(
        sub, "export", cmd_export, _EXPORT_HELP, "a model folder as ONNX (one recurrent step, states as I/O)"
    )
    e.add_argument("--model", required=True, help="model folder (model.pt + model.json)")
    e.add_argument("--format", default="onnx", choices=["onnx"], help="output format (onnx)")
    e.add_argument("--out", required=True, help="file to write, e.g. model.onnx")
    e.add_argument("--raw", action="store_true", help="output the undecoded head instead of boxes")
    e.add_argument(
        "--params", default="params.yaml", help="input size for pipeline models (imported ones know theirs)"
    )

    d = _command(
        sub, "detect", cmd_detect, _DETECT_HELP, "run a model over an event recording (DAT, EVT2/3 RAW, HDF5)"
    )
    d.add_argument("recording", help="event file: .dat, .raw (EVT 2.0/3.0), .h5/.hdf5")
    d.add_argument("--model", required=True, help="model folder (model.pt + model.json)")
    d.add_argument("--out", required=True, help="boxes file to write (.npy, Prophesee evaluator dtype)")
    d.add_argument("--window-ms", type=float, default=50.0, help="histogram window (default 50 ms)")
    d.add_argument("--step-ms", type=float, help="time between windows (default: the window)")
    d.add_argument("--start-ms", type=float, help="first window starts here (default: first event)")
    d.add_argument("--end-ms", type=float, help="ignore events after this time")
    d.add_argument("--conf", type=float, help="confidence threshold (default: the model's)")
    d.add_argument("--nms-iou", type=float, help="NMS IoU threshold (default: the model's)")
    d.add_argument("--half-resolution", action="store_true", help="halve the histograms (1Mpx, as RVT)")
    d.add_argument("--height", type=int, help="sensor height, for files that do not state it")
    d.add_argument("--width", type=int, help="sensor width, for files that do not state it")
    d.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1 ...)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.add_argument(
        "--video",
        help="also write the windows with their boxes as a video (.mp4; .gif without imageio-ffmpeg)",
    )

    u = _command(
        sub,
        "ui",
        cmd_ui,
        _UI_HELP,
        "start MLflow's UI on the project's store; prints the runs table's address",
    )
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    u.add_argument("--port", type=int, default=5000, help="port to listen on (default: 5000)")
    u.add_argument("--workers", type=int, default=1, help="server processes (default: 1; MLflow's own: 4)")
    u.add_argument("--experiment", help="MLflow experiment (default: tracking.experiment of --params)")
    u.add_argument("--params", default="params.yaml", help="params file naming the experiment")

    v = _command(
        sub,
        "visualize",
        cmd_visualize,
        VISUALIZE_HELP,
        "a dataset sequence with GT, pseudo labels and predictions side by side (video)",
    )
    v.add_argument("--data", default="data/preprocessed", help="preprocessed dataset folder")
    v.add_argument("--sequence", required=True, help="sequence name (any split), e.g. synth_train_0003")
    v.add_argument("--out", required=True, help="video to write (.mp4; .gif without imageio-ffmpeg)")
    v.add_argument("--pseudo", help="a round's pseudo labels to draw, e.g. pseudo/r1/labels.npz")
    v.add_argument("--model", help="model folder whose predictions to draw, e.g. models/r1")
    v.add_argument("--start", type=int, default=0, help="first frame drawn (default 0)")
    v.add_argument("--frames", type=int, default=40, help="frames drawn (default 40)")
    v.add_argument("--score", type=float, default=0.3, help="draw predictions with obj*cls >= this")
    v.add_argument("--device", default="cpu", help="torch device for --model")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (LeodError, OSError) as exc:
        return report_error(exc)
    return 0
