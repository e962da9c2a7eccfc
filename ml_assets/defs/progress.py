"""A Dagster logger that prints one short line per step start and finish, for long CLI runs."""

import logging
import sys

import dagster as dg

_SHOWN = {"STEP_START": "start", "STEP_SUCCESS": "done ", "STEP_FAILURE": "FAIL ", "STEP_SKIPPED": "skip "}


class _StepLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, "dagster_meta", None)
        event = meta.get("dagster_event") if isinstance(meta, dict) else None
        if event is None or event.event_type_value not in _SHOWN:
            return False
        record.msg = f"  [{_SHOWN[event.event_type_value]}] {event.step_key}"
        if event.event_type_value != "STEP_START":
            record.msg += f"  {event.message or ''}".rstrip()
        record.args = ()
        return True


@dg.logger(config_schema={}, description="One line per step start/finish on stderr (quiet otherwise)")
def step_progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    """A logger that shows run progress without Dagster's debug stream."""
    log = logging.getLogger(f"ml_assets.defs.progress.{init_context.run_id}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(_StepLines())
        log.addHandler(handler)
    return log
