"""`ml-assets serve`: the HTTP layer of the online half (FastAPI), thin over `serving/`'s parts.

- `POST /v1/events`: the event collector (`collector.py`), durable before it answers 200.
- `POST /v1/predict/{model}`: the production version's probability and top reasons for a player or
  a batch, from the online features, with A/B, canary and shadow splits (`traffic.py`).
- `GET /v1/models/events` (server-sent events) and `WS /v1/models/ws`: every stage change.
- `GET /healthz`, `/readyz`, `/v1/status`: liveness, readiness, and the online store's freshness,
  the warm path's lag, the circuit breaker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ml_assets.core.models.registry import Registry
from ml_assets.core.settings import CONFIG_ENV, Settings
from ml_assets.lake.model_store import ModelStore
from ml_assets.lake.tables import MODEL_REGISTRY, SERVED_PREDICTIONS, model_assets, table_uri
from ml_assets.serving.batch_scores import BatchScores
from ml_assets.serving.breaker import CircuitBreaker
from ml_assets.serving.collector import Collector, NotDurable
from ml_assets.serving.model_book import ModelBook
from ml_assets.serving.online_store import OnlineStore, StoreUnavailable
from ml_assets.serving.prediction_log import PredictionLog
from ml_assets.serving.scoring import Loaded, score_vectors
from ml_assets.serving.stores import online_store
from ml_assets.serving.traffic import CANDIDATE, PRODUCTION, SHADOW, Traffic, arm_version
from ml_assets.serving.warm import read_status, run_warm_path

LOG = logging.getLogger(__name__)
API_KEYS_ENV = "ML_ASSETS_API_KEYS"
POLARS_THREADS_ENV = "POLARS_MAX_THREADS"


def api_keys(settings: Settings) -> frozenset[str]:
    """The keys that may call this lake's collector and predictions: settings plus the environment."""
    from_env = [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
    return frozenset([*settings.serving.api_keys, *from_env])


class Server:
    """The parts one serving process runs, and the loops that keep them current."""

    def __init__(self, settings: Settings, store: OnlineStore | None = None, warm: bool = True) -> None:
        serving = settings.serving
        self.settings = settings
        self.keys = api_keys(settings)
        self.models = [s.name for s in settings.specs]
        self.store = store or online_store(settings)
        self.breaker = CircuitBreaker(serving.breaker_failures, serving.breaker_reset_seconds)
        self.collector = Collector(
            settings.landing_uri,
            settings.serving_dir / "spool",
            dedup_horizon_days=settings.cleaning.dedup_horizon_days,
            limits=settings.cleaning.limits(),
            bounds=settings.cleaning.time_bounds(),
            roll_seconds=serving.roll_seconds,
        )
        configured = {
            m: Traffic(arms=dict(t.arms), shadow=t.shadow or None) for m, t in serving.traffic.items()
        }
        self.book = ModelBook(
            self.models,
            Registry(table_uri(settings.lake_uri, MODEL_REGISTRY)),
            ModelStore(settings.models_uri),
            configured,
            settings.serving_dir / "traffic.json",
        )
        self.batch = {
            m: BatchScores(table_uri(settings.lake_uri, model_assets(m).predictions)) for m in self.models
        }
        self.log = PredictionLog(
            table_uri(settings.lake_uri, SERVED_PREDICTIONS),
            serving.log_flush_seconds,
            serving.log_flush_rows,
        )
        self.warm = warm
        self._warm_stop = multiprocessing.get_context("spawn").Event()
        self._warm_process: multiprocessing.process.BaseProcess | None = None
        self.subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.reload()

    # -- background ------------------------------------------------------------------------------

    def reload(self) -> None:
        """Pick up stage changes, splits and new batch scores; tell subscribers of stage changes."""
        for change in self.book.refresh():
            LOG.info("stage change: %s", change)
            self.publish(change)
        for scores in self.batch.values():
            scores.refresh()

    def publish(self, message: dict[str, Any]) -> None:
        loop = self.loop
        if loop is None:
            return
        for queue in list(self.subscribers):
            loop.call_soon_threadsafe(queue.put_nowait, message)

    def _every(self, seconds: float, work: Any, name: str) -> None:
        def run() -> None:
            while not self._stop.wait(seconds):
                try:
                    work()
                except Exception:  # logged, and the next tick tries again: a bad tick must not stop serving
                    LOG.exception("%s failed", name)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._every(self.settings.serving.reload_seconds, self.reload, "reload")
        if self.warm:
            context = multiprocessing.get_context("spawn")
            config = os.environ.get(CONFIG_ENV)
            self._warm_process = context.Process(
                target=run_warm_path,
                args=(str(self.settings.home), config, self._warm_stop, os.getpid()),
                name="warm-path",
                daemon=True,
            )
            # background work: one Polars thread, and the child lowers its own priority, so the
            # request path keeps a core (2 cores: p99 at 500 requests/s went to 418 ms without)
            before = os.environ.get(POLARS_THREADS_ENV)
            os.environ[POLARS_THREADS_ENV] = "1"
            try:
                self._warm_process.start()
            finally:
                if before is None:
                    del os.environ[POLARS_THREADS_ENV]
                else:
                    os.environ[POLARS_THREADS_ENV] = before

    def stop(self) -> None:
        self._stop.set()
        self._warm_stop.set()
        if self._warm_process is not None:
            self._warm_process.join(timeout=30)
        for thread in self._threads:
            thread.join(timeout=30)
        self.collector.close()
        self.log.close()
        self.store.close()

    # -- requests --------------------------------------------------------------------------------

    def authorised(self, request: Request | WebSocket) -> bool:
        key = request.headers.get("x-api-key") or ""
        bearer = request.headers.get("authorization", "")
        if not key and bearer.lower().startswith("bearer "):
            key = bearer[7:].strip()
        return bool(key) and key in self.keys

    def predict(self, model: str, player_ids: list[str]) -> dict[str, Any]:
        """Scores of `player_ids` by `model`'s split: online vectors where the store has them, the
        newest batch score otherwise (and for every player while the store is down)."""
        serving = self.book.serving(model)
        production = serving.production
        if production is None:
            raise LookupError(f"model {model!r} has no production version yet")
        now = datetime.now(UTC)
        request_id = uuid.uuid4().hex
        vectors: dict[str, Any] = {}
        degraded = False
        if self.breaker.allow():
            try:
                vectors = self.store.get(player_ids, now)
                self.breaker.success()
            except StoreUnavailable as exc:
                LOG.warning("online store unavailable, serving batch scores: %s", exc)
                self.breaker.failure()
                degraded = True
        else:
            degraded = True
        groups: dict[tuple[str, str], tuple[Loaded, list[str]]] = {}
        answers: dict[str, dict[str, Any]] = {}
        for player in player_ids:
            version = arm_version(model, player, serving.traffic)
            loaded = serving.arms.get(version, production) if version else production
            arm = CANDIDATE if loaded is not production else PRODUCTION
            if player in vectors and loaded.online:
                groups.setdefault((loaded.version, arm), (loaded, []))[1].append(player)
            else:
                # the arm stays the one the player is assigned (intent to treat), so a comparison
                # of arms compares the same kind of players; `version` says what scored them
                answers[player] = self._from_batch(model, player, degraded, arm)
        for (_, arm), (loaded, players) in groups.items():
            p, reasons = score_vectors(
                loaded, [vectors[q].features for q in players], self.settings.serving.reasons
            )
            for i, player in enumerate(players):
                answers[player] = {
                    "player_id": player,
                    "probability": float(p[i]),
                    "version": loaded.version,
                    "arm": arm,
                    "reasons": [asdict(r) for r in reasons[i]],
                    "features_as_of": vectors[player].as_of.isoformat(),
                    "source": "online",
                }
        predictions = [answers[p] for p in player_ids]
        for answer in predictions:
            if "probability" in answer:
                as_of = answer.get("features_as_of")
                self.log.add(
                    now,
                    request_id,
                    model,
                    answer["version"],
                    answer["arm"],
                    answer["player_id"],
                    answer["probability"],
                    answer["source"],
                    datetime.fromisoformat(as_of).date() if as_of else None,
                )
        shadow = serving.shadow
        if shadow is not None and shadow.online:
            online = [p for p in player_ids if p in vectors]
            if online:
                p, _ = score_vectors(shadow, [vectors[q].features for q in online], 0)
                for i, player in enumerate(online):
                    self.log.add(
                        now,
                        request_id,
                        model,
                        shadow.version,
                        SHADOW,
                        player,
                        float(p[i]),
                        "online",
                        vectors[player].as_of,
                    )
        return {"model": model, "request_id": request_id, "degraded": degraded, "predictions": predictions}

    def _from_batch(self, model: str, player: str, degraded: bool, arm: str) -> dict[str, Any]:
        score = self.batch[model].get(player)
        if score is None:
            return {"player_id": player, "error": "no online features and no batch score for this player"}
        return {
            "player_id": player,
            "probability": score.probability,
            "version": score.version,
            "arm": arm,
            "reasons": score.reasons,
            "features_as_of": score.as_of.isoformat(),
            "source": "batch_fallback" if degraded else "batch",
        }

    def status(self) -> dict[str, Any]:
        """What serves and how fresh it is: versions, splits, the online store, the warm path."""
        models = {}
        for m in self.models:
            s = self.book.serving(m)
            batch_as_of = self.batch[m].as_of
            models[m] = {
                "production": s.production.version if s.production else None,
                "arms": s.traffic.arms,
                "shadow": s.shadow.version if s.shadow else None,
                "batch_scores": len(self.batch[m]),
                "batch_as_of": batch_as_of.isoformat() if batch_as_of else None,
            }
        store: dict[str, Any] = {"kind": self.store.kind, "breaker": self.breaker.state}
        try:
            st = self.store.status()
            age = (datetime.now(UTC) - st.newest_update).total_seconds() if st.newest_update else None
            store |= {
                "up": True,
                "rows": st.rows,
                "newest_update": st.newest_update.isoformat() if st.newest_update else None,
                "newest_as_of": st.newest_as_of.isoformat() if st.newest_as_of else None,
                "freshness_seconds": age,
                "ttl_seconds": st.ttl_seconds,
            }
        except StoreUnavailable as exc:
            store |= {"up": False, "error": str(exc)}
        collector = {
            "spool_files": len(self.collector.spool_files()),
            "landed_batches": self.collector.landed_batches,
            "remembered_ids": self.collector.remembered_ids,
            "last_durable_at": self.collector.last_durable_at.isoformat()
            if self.collector.last_durable_at
            else None,
        }
        log = {"written": self.log.written, "pending": self.log.pending, "failures": self.log.failures}
        warm = read_status(self.settings) if self.warm else None
        return {
            "models": models,
            "online_store": store,
            "collector": collector,
            "served_log": log,
            "warm": warm,
        }


def create_app(settings: Settings, store: OnlineStore | None = None, warm: bool = True) -> FastAPI:
    """The FastAPI app of `ml-assets serve` on the lake of `settings`."""
    holder: dict[str, Server] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server = Server(settings, store, warm)
        server.start(asyncio.get_running_loop())
        holder["server"] = server
        app.state.server = server
        try:
            yield
        finally:
            await run_in_threadpool(server.stop)

    app = FastAPI(title="ml-assets", lifespan=lifespan)
    limits = settings.serving

    def error(status: int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    @app.post("/v1/events")
    async def collect(request: Request) -> JSONResponse:
        """A batch of canonical events, each with a client-made event_id; 200 once durable."""
        server = holder["server"]
        if not server.authorised(request):
            return error(401, "missing or unknown API key (X-API-Key header)")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_batch_bytes:
            return error(413, f"a batch is at most {limits.max_batch_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_batch_bytes:
                return error(413, f"a batch is at most {limits.max_batch_bytes} bytes")
        try:
            payload = json.loads(body)
        except ValueError:
            return error(400, "the body is not JSON")
        events = payload.get("events") if isinstance(payload, dict) else payload
        if not isinstance(events, list):
            return error(400, 'expected {"events": [...]} or a JSON array of events')
        if len(events) > limits.max_batch_events:
            return error(413, f"a batch is at most {limits.max_batch_events} events, got {len(events)}")
        try:
            receipt = await run_in_threadpool(server.collector.accept, events)
        except NotDurable as exc:
            return error(503, str(exc))
        body_out = {"accepted": receipt.accepted, "duplicates": receipt.duplicates}
        if receipt.rejected:
            rejected = [asdict(r) for r in receipt.rejected]
            return JSONResponse(body_out | {"rejected": rejected}, status_code=400)
        return JSONResponse(body_out)

    @app.post("/v1/predict/{model}")
    async def predict(model: str, request: Request) -> JSONResponse:
        """{"player_id": ...} or {"player_ids": [...]}: probability, version, arm and top reasons."""
        server = holder["server"]
        if not server.authorised(request):
            return error(401, "missing or unknown API key (X-API-Key header)")
        if model not in server.models:
            return error(404, f"no model named {model!r}; served: {server.models}")
        try:
            payload = json.loads(await request.body())
        except ValueError:
            return error(400, "the body is not JSON")
        ids = payload.get("player_ids") if isinstance(payload, dict) else None
        if ids is None and isinstance(payload, dict) and "player_id" in payload:
            ids = [payload["player_id"]]
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            return error(400, 'expected {"player_id": "..."} or {"player_ids": ["...", ...]}')
        if len(ids) > limits.max_batch_events:
            return error(413, f"at most {limits.max_batch_events} players a request")
        try:
            return JSONResponse(server.predict(model, ids))
        except LookupError as exc:
            return error(503, str(exc))

    @app.get("/v1/models/events", response_model=None)
    async def model_events(request: Request) -> StreamingResponse | JSONResponse:
        """Server-sent events: {model, version, stage, previous_stage, at, reason} on each stage change."""
        server = holder["server"]
        if not server.authorised(request):
            return error(401, "missing or unknown API key (X-API-Key header)")
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        server.subscribers.add(queue)

        async def stream() -> AsyncIterator[str]:
            try:
                yield ": connected\n\n"
                while True:
                    try:
                        message = await asyncio.wait_for(queue.get(), timeout=15)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"event: stage\ndata: {json.dumps(message)}\n\n"
            finally:
                server.subscribers.discard(queue)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.websocket("/v1/models/ws")
    async def model_socket(socket: WebSocket) -> None:
        """The same stage changes as JSON messages over a WebSocket."""
        server = holder["server"]
        if not server.authorised(socket):
            await socket.close(code=4401)
            return
        await socket.accept()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        server.subscribers.add(queue)

        async def push() -> None:
            while True:
                await socket.send_json(await queue.get())

        async def listen() -> None:  # a client that leaves is noticed at once, not at the next change
            while (await socket.receive())["type"] != "websocket.disconnect":
                pass

        tasks = [asyncio.create_task(push()), asyncio.create_task(listen())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            server.subscribers.discard(queue)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready when every model has a production version to serve; details in the body."""
        server = holder["server"]
        status = await run_in_threadpool(server.status)
        missing = [m for m, s in status["models"].items() if s["production"] is None]
        ready = not missing
        body = {"ready": ready, "not_serving": missing, **status}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        return await run_in_threadpool(holder["server"].status)

    return app
