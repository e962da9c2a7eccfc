"""`ml-assets`: simulate or ingest events, materialize the graph, open the UI, report status."""

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from ml_assets.core.settings import CONFIG_ENV, HOME_ENV, Settings, load_settings
from ml_assets.lake.tables import EXPERIMENTS, table_uri

# What a user can cause and fix: bad options, settings, mappings, files, lake paths, unknown names.
# Any other exception is an internal error: also one line, with exit code 1 instead of 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, LookupError)

DEMO_PLAYERS, DEMO_DAYS, DEMO_SEED = 5_000, 60, 7


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.home, args.config)
    # the Dagster layer and any child process (the UI) read the same home and settings
    os.environ[HOME_ENV] = str(settings.home)
    if args.config:
        os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    return settings


def cmd_simulate(args: argparse.Namespace) -> int:
    from ml_assets.simulator.game import SimulationParams, extend, has_simulation, simulate

    settings = _settings(args)
    landing = settings.landing_uri

    def progress(day: date) -> None:
        if day.day == 1 or args.verbose:
            _say(f"  simulated through {day}")

    # `demo` reuses this command without the shift arguments
    shift_day, shift = getattr(args, "shift_day", None), getattr(args, "shift", None)
    if shift and not shift_day:
        raise ValueError("--shift needs --shift-day (the day the shift starts)")
    started = time.perf_counter()
    if (
        args.until
        and has_simulation(landing)
        and args.players is None
        and args.days is None
        and not shift_day
    ):
        report = extend(landing, date.fromisoformat(args.until), progress=progress)
    else:
        params = SimulationParams(
            players=args.players or DEMO_PLAYERS,
            days=args.days or DEMO_DAYS,
            start=date.fromisoformat(args.start) if args.start else SimulationParams.start,
            seed=args.seed if args.seed is not None else DEMO_SEED,
            dirty_rate=args.dirty_rate,
            shift_day=date.fromisoformat(shift_day) if shift_day else None,
            shift=shift or SimulationParams.shift,
        )
        until = date.fromisoformat(args.until) if args.until else None
        report = simulate(landing, params, until=until, progress=progress)
    print(
        f"landed {report.days_landed} day batches ({report.rows:,} rows), "
        f"{report.days_skipped} already present; "
        f"data {report.first_day} .. {report.last_day} in {time.perf_counter() - started:.1f}s -> {landing}"
    )
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from ml_assets.core.events.ingest import ingest

    settings = _settings(args)
    report = ingest(
        Path(args.path), Path(args.mapping), settings.landing_uri, settings.cleaning.time_bounds()
    )
    state = "landed" if report.landed else "already landed (nothing added)"
    print(
        f"{args.path}: {report.rows:,} rows {state} as batch {report.batch_id[:12]}; "
        f"days {report.first_day} .. {report.last_day}; "
        f"to quarantine when cleaned: {report.unparsed_times} malformed_event_time, "
        f"{report.implausible_times} implausible event times, {report.unparsed_values} malformed_value"
    )
    return 0


def _run(settings: Settings, select: Sequence[str] | None, first: str | None, last: str | None) -> int:
    from ml_assets.app.runner import instance_for, materialize

    instance = instance_for(settings)
    started = time.perf_counter()
    what = ", ".join(select) if select else "every asset"
    _say(f"materializing {what} over {first or 'the first day'} .. {last or 'the last day'} (one run)")
    summary = materialize(settings, instance, select, first, last)
    elapsed = time.perf_counter() - started
    if summary.failed_checks:
        _say(f"failed checks: {', '.join(summary.failed_checks)}")
    if not summary.success:
        for error in summary.errors:
            _say(f"failed: {error}")
        _say(f"run {summary.run_id} FAILED after {elapsed:.1f}s; `ml-assets ui` has the step logs")
        return 1
    print(f"run {summary.run_id} succeeded in {elapsed:.1f}s: {', '.join(summary.materialized)}")
    return 0


def _day(value: str | None, flag: str) -> str | None:
    """A YYYY-MM-DD option's value, checked."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"{flag} {value!r} is not a day (YYYY-MM-DD)") from None


def cmd_materialize(args: argparse.Namespace) -> int:
    settings = _settings(args)
    select = [s for part in args.select or [] for s in part.split(",") if s]
    return _run(
        settings, select or None, _day(args.first_day, "--first-day"), _day(args.last_day, "--last-day")
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from ml_assets.app.runner import lake_paths
    from ml_assets.app.status import model_status
    from ml_assets.simulator.game import has_simulation

    settings = _settings(args)
    # the days ending yesterday (Dagster's newest complete daily partition), so the demo lake is fresh;
    # a home that already holds the demo's simulation is extended to yesterday, like a live game
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    saved = has_simulation(settings.landing_uri)
    args.start = None if saved else (yesterday - timedelta(days=args.days - 1)).isoformat()
    args.until = yesterday.isoformat() if saved else None
    if saved:
        args.players = args.days = args.seed = None
    _say(f"simulating {'to' if saved else 'the days to'} {yesterday} into {settings.home}")
    cmd_simulate(args)
    code = _run(settings, None, None, None)
    if code:
        return code
    print()
    for m in model_status(settings):
        if m["roc_auc"] is None:
            continue
        print(
            f"{m['model']} model {m['version']} ({m['stage']}): test ROC AUC {m['roc_auc']:.3f} (recency "
            f"baseline {m['baseline_roc_auc']:.3f}), PR AUC {m['pr_auc']:.3f}, log loss {m['log_loss']:.3f}"
        )
    for label, path in lake_paths(settings).items():
        print(f"{label}: {path}")
    print(f"UI: ml-assets --home {settings.home} ui   (then open http://127.0.0.1:3000)")
    print(
        f"Online: ML_ASSETS_API_KEYS=secret ml-assets --home {settings.home} serve   "
        "(events and predictions on http://127.0.0.1:8000, see docs/serving.md)"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ml_assets.app.runner import instance_for
    from ml_assets.app.status import format_status, lake_status
    from ml_assets.definitions import build_definitions

    settings = _settings(args)
    defs = build_definitions(settings)
    check_keys = sorted(defs.resolve_asset_graph().asset_check_keys, key=lambda k: k.to_user_string())
    status = lake_status(settings, instance_for(settings), check_keys)
    print(json.dumps(status, indent=2, default=str) if args.json else format_status(status))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import getpass

    from ml_assets.app.runner import change_stage, instance_for, summarize
    from ml_assets.app.status import model_status, registry

    settings = _settings(args)
    if args.action == "list":
        rows = [m for m in model_status(settings) if args.model in (None, m["model"])]
        if args.json:
            print(json.dumps(rows, indent=2, default=str))
        for m in [] if args.json else rows:
            auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
            print(f"{m['model']:<16} {m['version']}  {m['stage']:<12} roc_auc {auc}  at {m['registered_at']}")
        return 0
    if not args.model:
        raise ValueError(f"models {args.action} needs a model name")
    spec = settings.spec(args.model)
    if args.action == "promote" and not args.version:
        raise ValueError("models promote needs a version (see `ml-assets models list`)")
    summary = summarize(
        change_stage(
            settings,
            instance_for(settings),
            spec.name,
            args.action,
            args.version or "",
            args.reason or f"{args.action} from the CLI",
            f"cli:{getpass.getuser()}",
        )
    )
    if not summary.success:
        for error in summary.errors:
            _say(f"failed: {error}")
        _say(f"run {summary.run_id} FAILED; `ml-assets ui` has the step logs")
        return 1
    version = registry(settings).current(spec.name)
    print(f"{spec.name}: production is now {version}; predictions re-scored (run {summary.run_id})")
    return 0


def cmd_experiments(args: argparse.Namespace) -> int:
    from ml_assets.core.models.experiments import compare_runs, format_runs, list_runs

    settings = _settings(args)
    recorded = list_runs(table_uri(settings.lake_uri, EXPERIMENTS), args.model)
    runs = compare_runs(recorded)
    if not args.json:
        print(format_runs(runs))
        return 0
    # the JSON also says how features were selected and how the model was tuned
    detail = {r["run_id"]: r for r in recorded.iter_rows(named=True)}
    rows = [
        {
            **row,
            **{k: json.loads(detail[row["run_id"]][k] or "{}") for k in ("selection", "tuning")},
            "dropped_features": json.loads(detail[row["run_id"]]["dropped_features"]),
        }
        for row in runs.to_dicts()
    ]
    print(json.dumps(rows, indent=2, default=str))
    return 0


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f}"


def cmd_maintain(args: argparse.Namespace) -> int:
    from ml_assets.lake.maintenance import maintain_lake

    settings = _settings(args)
    done = maintain_lake(settings, "ml-assets maintain")
    for t in done:
        size = f"; {_mb(t.bytes_before)} -> {_mb(t.bytes_after)} MB"
        work = f"{t.files_compacted} files compacted into {t.files_added}, {t.files_vacuumed} vacuumed"
        print(f"{t.table:<32} {work}{size}")
    before = sum(t.bytes_before for t in done)
    after = sum(t.bytes_after for t in done)
    print(f"{len(done)} tables maintained; {_mb(before)} -> {_mb(after)} MB")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from ml_assets.app.runner import instance_for, write_workspace

    settings = _settings(args)
    instance_for(settings)  # writes dagster.yaml when missing, marks runs of dead processes failed
    workspace = write_workspace(settings)
    env = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home), HOME_ENV: str(settings.home)}
    cmd = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(workspace),
        "-h",
        args.host,
        "-p",
        str(args.port),
    ]
    _say(f"DAGSTER_HOME={settings.dagster_home} {HOME_ENV}={settings.home}\n{' '.join(cmd)}")
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached: exec replaces this process


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ml_assets.serving.app import api_keys, create_app

    settings = _settings(args)
    if not api_keys(settings):
        _say(
            "ml-assets serve: no API key set ([serving] api_keys or $ML_ASSETS_API_KEYS): every call gets 401"
        )
    host, port = args.host or settings.serving.host, args.port or settings.serving.port
    _say(f"ml-assets serve: http://{host}:{port} on the lake {settings.home}")
    # a stop waits at most 5 s for open requests and subscriptions, then lands the spool and flushes
    # the served-predictions log (the app's shutdown)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return 0


def cmd_traffic(args: argparse.Namespace) -> int:
    from ml_assets.lake.model_store import ModelStore
    from ml_assets.serving.traffic import Traffic, read_overrides, write_override

    settings = _settings(args)
    path = settings.serving_dir / "traffic.json"
    if args.model is not None:
        settings.spec(args.model)  # an unknown model is a user error naming the known ones
        if args.clear:
            write_override(path, args.model, None)
        elif args.arm or args.shadow:
            store = ModelStore(settings.models_uri)
            arms: dict[str, float] = {}
            for arm in args.arm or []:
                version, _, share = arm.partition("=")
                if not share:
                    raise ValueError(f"--arm takes VERSION=SHARE, got {arm!r}")
                arms[version] = float(share)
            for version in [*arms, *([args.shadow] if args.shadow else [])]:
                if not store.has(args.model, version):
                    raise ValueError(f"{args.model} version {version!r} is not in the model store")
            write_override(path, args.model, Traffic(arms=arms, shadow=args.shadow))
    overrides = read_overrides(path)
    configured = {
        m: Traffic(arms=dict(t.arms), shadow=t.shadow or None) for m, t in settings.serving.traffic.items()
    }
    shown = {
        m: (overrides.get(m) or configured.get(m) or Traffic()).as_json()
        for m in (s.name for s in settings.specs)
    }
    print(json.dumps(shown, indent=2))
    return 0


def _global_options(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--home", default=default, help=f"lake home (default ${HOME_ENV} or ./.ml_assets)")
    p.add_argument("--config", default=default, help="settings file (default <home>/ml_assets.toml)")
    p.add_argument(
        "--verbose",
        action="store_true",
        default=False if default is None else default,
        help="more output: tracebacks of errors, progress of every simulated day",
    )


def _subparser(common: argparse.ArgumentParser) -> type[argparse.ArgumentParser]:
    """A parser class whose verbs all take the global options too (before or after the verb)."""

    class Verb(argparse.ArgumentParser):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "parents": [*kwargs.get("parents", []), common]})

    return Verb


def parser() -> argparse.ArgumentParser:
    """The argument parser of every verb."""
    p = argparse.ArgumentParser(prog="ml-assets", description=__doc__)
    _global_options(p, None)
    # the same options after the verb; SUPPRESS keeps a verb from overwriting what came before it
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_subparser(common))

    def sim_args(sp: argparse.ArgumentParser, defaults: bool) -> None:
        sp.add_argument("--players", type=int, default=DEMO_PLAYERS if defaults else None)
        sp.add_argument("--days", type=int, default=DEMO_DAYS if defaults else None)
        sp.add_argument("--seed", type=int, default=DEMO_SEED if defaults else None)
        sp.add_argument("--dirty-rate", type=float, default=0.01, help="share of dirty rows (default 0.01)")

    s = sub.add_parser("simulate", help="land seeded synthetic game telemetry, one batch per day")
    sim_args(s, defaults=False)
    s.add_argument("--start", help="first day, YYYY-MM-DD (default 2025-01-01)")
    s.add_argument("--until", help="last day to land; extends an existing simulation when given alone")
    s.add_argument("--shift-day", help="day behaviour shifts, YYYY-MM-DD (default: no shift)")
    s.add_argument("--shift", help="the scenario from --shift-day on (default patch)")
    s.set_defaults(func=cmd_simulate)

    i = sub.add_parser("ingest", help="land a CSV, Parquet or JSON-lines event file through a column mapping")
    i.add_argument("path")
    i.add_argument("--mapping", required=True, help="mapping TOML (see examples/cdnow/cdnow.toml)")
    i.set_defaults(func=cmd_ingest)

    m = sub.add_parser("materialize", help="materialize assets over the landed days, as one run")
    m.add_argument("--select", action="append", help="asset key(s), comma separated; default all")
    m.add_argument("--first-day", help="first partition (default: first landed day)")
    m.add_argument("--last-day", help="last partition (default: last landed day)")
    m.set_defaults(func=cmd_materialize)

    d = sub.add_parser("demo", help="simulate, then materialize everything and print the model's metrics")
    sim_args(d, defaults=True)
    d.set_defaults(func=cmd_demo)

    st = sub.add_parser("status", help="tables, checks and model versions")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    md = sub.add_parser("models", help="list model versions and stages; promote or roll back production")
    md.add_argument("action", choices=["list", "promote", "rollback"])
    md.add_argument("model", nargs="?")
    md.add_argument("version", nargs="?")
    md.add_argument("--reason", help="why (kept in the registry's audit log)")
    md.add_argument("--json", action="store_true")
    md.set_defaults(func=cmd_models)

    ex = sub.add_parser("experiments", help="list and compare training runs")
    ex.add_argument("--model")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=cmd_experiments)

    mt = sub.add_parser("maintain", help="compact, checkpoint and vacuum the lake's Delta tables")
    mt.set_defaults(func=cmd_maintain)

    sv = sub.add_parser("serve", help="the event collector and predictions API (HTTP), on this lake")
    sv.add_argument("--host", help="interface (default [serving] host, 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (default [serving] port, 8000)")
    sv.set_defaults(func=cmd_serve)

    tr = sub.add_parser("traffic", help="show or set a model's A/B, canary and shadow split")
    tr.add_argument("model", nargs="?")
    tr.add_argument(
        "--arm", action="append", help="VERSION=SHARE: that share of players (by hash) gets VERSION"
    )
    tr.add_argument("--shadow", help="a version that scores every request without being served")
    tr.add_argument("--clear", action="store_true", help="back to production only (or the settings' split)")
    tr.set_defaults(func=cmd_traffic)

    u = sub.add_parser("ui", help="start the Dagster UI on this lake's instance")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=3000)
    u.set_defaults(func=cmd_ui)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ml-assets` console script."""
    args = parser().parse_args(argv)
    import dagster as dg

    # backfill policies and partition mappings are marked beta; the CLI's users need not read that per run
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        _say(f"ml-assets {args.command}: interrupted")
        return 130
    except Exception as exc:
        if args.verbose:
            traceback.print_exc()
        user_error = isinstance(exc, USER_ERRORS)
        hint = "" if args.verbose else " (--verbose shows the traceback)"
        kind = "error" if user_error else f"internal error {type(exc).__name__}"
        _say(f"ml-assets {args.command}: {kind}: {_one_line(exc)}{'' if user_error else hint}")
        return 2 if user_error else 1


def _one_line(exc: BaseException) -> str:
    """The first line of an error's message, shortened: some libraries' messages run to pages."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


if __name__ == "__main__":
    sys.exit(main())
