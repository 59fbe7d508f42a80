"""Evaluation backends: one interface that takes a stream of configurations and yields their Results, run in this
process, in a pool of spawned worker processes, or on Ray.

Every backend builds its engines from one :class:`~qtradeoff.core.engine.engine.EngineSpec` (once per worker,
which then keeps its caches) and evaluates with the same options, so the metrics are the same whichever runs them;
only latency differs (estimates come from a roofline calibrated in each process, timings from its cores).
:meth:`Backend.map` yields one :class:`Outcome` per configuration in completion order, with a bounded number in
flight (two per worker, so a stopped sweep waits for at most that many). A worker that dies (a crash in a
native kernel, the OOM killer, ``kill -9``) costs only the configuration it was running: the worker is replaced,
that configuration retried once (then reported as failed with the reason) and the ones waiting behind it sent
again. Configurations whose latency is *measured* run exclusively — nothing else is dispatched until the timing
ends — so parallel work never corrupts a timing.
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import os
import shutil
import signal
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.errors import QtradeoffError, UsageError
from qtradeoff.core.measurement.latency import LatencySettings
from qtradeoff.core.measurement.result import Result

BACKENDS = ("local", "pool", "ray")
# A configuration whose worker died is run once more on a fresh worker; a second death means the configuration
# itself kills workers (a native crash, memory), and retrying forever would stall the sweep.
ATTEMPTS = 2
# Test-only: a worker evaluating the configuration with this key kills itself with SIGKILL (how the tests make a
# configuration that kills its worker every time). Never set outside tests.
_CRASH_ENV = "QTRADEOFF_TEST_CRASH_KEY"


class BackendError(QtradeoffError):
    """A backend could not start (Ray missing, a cluster unreachable, workers that never came up)."""


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Options:
    """How every configuration of one :meth:`Backend.map` is evaluated (the same on every backend)."""

    latency: str = "estimated"
    eval_size: int | None = None
    full: bool = False  # without the cut cache (a solver's final re-measurement); identical numbers
    timing_threads: int | None = None  # threads of a measured timing (None: the worker's own count)

    @property
    def exclusive(self) -> bool:
        """A measured timing needs the cores to itself."""
        return self.latency in ("measured", "both")


@dataclass(frozen=True)
class Outcome:
    """One configuration's fate: its ``index`` in the stream, and its Result or why it has none."""

    index: int
    config: CompressionConfig
    result: Result | None
    failure: str = ""

    @property
    def ok(self) -> bool:
        return self.result is not None


def evaluate_one(engine, config: CompressionConfig, options: Options) -> Result:
    """What every backend runs for one configuration (so all of them evaluate alike)."""
    settings = None
    if options.exclusive and options.timing_threads:
        settings = LatencySettings(threads=options.timing_threads)
    return engine.evaluate(config, latency=options.latency, eval_size=options.eval_size,
                           incremental=not options.full, latency_settings=settings)


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())[:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Backend:
    """Evaluates configurations; use as a context manager (or call :meth:`close`)."""

    name = ""
    workers = 1

    def map(self, configs: Iterable[CompressionConfig], *, latency: str = "estimated", eval_size: int | None = None,
            full: bool = False, should_stop: Callable[[], bool] = lambda: False) -> Iterator[Outcome]:
        """Evaluate ``configs`` (consumed lazily) and yield an :class:`Outcome` for each, in completion order.

        ``should_stop()`` is checked before each dispatch: once true nothing new starts, and what is in flight is
        still yielded. An evaluation that raises is a failed Outcome naming the error (it is not retried)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class InProcess(Backend):
    """Evaluates in the calling thread on one engine (tests, notebooks, and the CLI's default)."""

    name = "local"

    def __init__(self, engine, *, threads: int | None = None):
        self.engine = engine.build() if hasattr(engine, "build") else engine
        self.threads = threads  # torch threads while evaluating (None: the process's setting)

    def map(self, configs, *, latency="estimated", eval_size=None, full=False, should_stop=lambda: False):
        from qtradeoff.core.measurement.result import Cancelled

        options = Options(latency, eval_size, full)
        for index, config in enumerate(configs):
            if should_stop():
                return
            try:
                result = self._evaluate(config, options)
            except Cancelled:
                return
            except Exception as error:  # the same record a worker's failure gives
                yield Outcome(index, config, None, _reason(error))
                continue
            yield Outcome(index, config, result)

    def _evaluate(self, config, options: Options) -> Result:
        if self.threads is None:
            return evaluate_one(self.engine, config, options)
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return evaluate_one(self.engine, config, options)
        finally:
            torch.set_num_threads(previous)


# -- the process pool ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Evaluation:
    """A pool job: evaluate one configuration (what :meth:`Backend.map` sends)."""

    config: CompressionConfig
    options: Options

    def run(self, engine) -> Result:
        return evaluate_one(engine, self.config, self.options)


@dataclass(frozen=True)
class LayerTrials:
    """A pool job: the scores of configurations that differ only at ``layer`` (one layer of a sensitivity
    analysis), through ``Engine.score_variants`` on the worker's engine; plain ``QuickScore`` values come back."""

    layer: str
    configs: tuple[CompressionConfig, ...]

    @property
    def config(self) -> CompressionConfig | None:
        return self.configs[0] if self.configs else None

    def run(self, engine) -> list:
        return engine.score_variants(self.layer, list(self.configs))


@dataclass(frozen=True)
class Score:
    """A pool job: the quick score (accuracy/agreement, no memory or latency) of one configuration through
    ``Engine.score`` on the worker's engine, its cut values kept there for the jobs after it."""

    config: CompressionConfig

    def run(self, engine):
        return engine.score(self.config)


def _worker_main(conn, spec, threads: int) -> None:
    """A pool worker: build the engine once, then run the jobs the parent sends until it sends None.

    Jobs wait in the pipe (the parent keeps up to two per worker in flight), so the worker starts its next job
    the moment it has sent a result instead of waiting for the parent to read it and answer."""
    import torch

    from qtradeoff.core import runtime

    runtime.tune_allocator()
    torch.set_num_threads(threads)  # several workers share the cores: each uses its share, recorded in provenance
    try:
        engine = spec.build()
    except BaseException as error:
        conn.send(("broken", error if isinstance(error, QtradeoffError) else BackendError(_reason(error))))
        return
    conn.send(("ready", os.getpid()))
    crash_key = os.environ.get(_CRASH_ENV)
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent went away
            return
        if message is None:
            return
        task, job = message
        config = getattr(job, "config", None)
        if crash_key and config is not None and config.key() == crash_key:
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            conn.send(("done", task, job.run(engine)))
        except Exception as error:
            conn.send(("failed", task, _reason(error)))


@dataclass
class _Slot:
    """One worker process and the tasks sent to it, in the order it runs them (the first one is running; these
    ids survive a map that was abandoned mid-way, so the slot stays busy until the worker has answered them)."""

    process: object
    conn: object
    ready: bool = False
    pid: int | None = None
    tasks: deque = dataclasses.field(default_factory=deque)
    started: float = 0.0

    @property
    def task(self) -> int | None:
        """The task the worker is running (None when idle)."""
        return self.tasks[0] if self.tasks else None


@dataclass
class _Task:
    index: int
    config: CompressionConfig
    attempts: int = 0
    job: object = None


class ProcessPool(Backend):
    """``workers`` spawned processes (default: one per core), each with its own pipe and engine.

    Not ``concurrent.futures.ProcessPoolExecutor``: one worker killed there breaks the whole pool and every
    future in flight. Here a dead worker is replaced and only its configurations are retried. ``threads``: torch
    threads per worker (default: the cores divided among the workers, at least 1); measured timings run alone
    with ``timing_threads`` (default: every core, as an in-process evaluation times). ``depth``: jobs in flight
    per worker (default 2: the next one already waits in the worker's pipe while the parent reads a result, so a
    worker never idles on the round trip; measured timings always run one at a time).
    """

    name = "pool"

    def __init__(self, spec, workers: int | None = None, *, threads: int | None = None,
                 timing_threads: int | None = None, start_timeout: float = 300.0, depth: int = 2):
        cores = available_cores()
        self.spec = spec
        self.workers = int(workers or cores)
        if self.workers < 1:
            raise UsageError(f"a process pool needs at least 1 worker, got {workers}")
        self.threads = int(threads or max(1, cores // self.workers))
        self.timing_threads = int(timing_threads or cores)
        self.start_timeout = start_timeout
        self.depth = max(1, int(depth))
        self._context = multiprocessing.get_context("spawn")  # never fork: torch's thread pools do not survive it
        self._slots: list[_Slot] = []
        self._next_task = 0
        self._early_deaths = 0
        try:
            self._slots = [self._spawn() for _ in range(self.workers)]
        except BaseException:
            self.close()
            raise

    def _spawn(self) -> _Slot:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(child, self.spec, self.threads),
                                        name="qtradeoff-worker", daemon=True)
        process.start()
        child.close()
        return _Slot(process, parent, started=time.monotonic())

    def worker_pids(self, *, busy: bool = False) -> list[int]:
        """The worker processes' pids (``busy``: only those running a configuration); the tests kill one."""
        return [slot.process.pid for slot in self._slots if slot.tasks or not busy]

    def wait_ready(self) -> None:
        """Block until every worker has built its engine (start-up, separately from the first result)."""
        for slot in self._slots:
            while not slot.ready:
                self._receive(slot, block=True)

    def _receive(self, slot: _Slot, *, block: bool = False):
        """The next message of ``slot``'s worker, ``("died", reason)`` when it is gone, or None (nothing yet)."""
        if not block and not slot.conn.poll():
            if slot.process.is_alive() or slot.conn.poll():
                return None
        try:
            message = slot.conn.recv()
        except (EOFError, OSError):
            slot.process.join(timeout=5)
            code = slot.process.exitcode
            if code is not None and code < 0:
                reason = f"signal {-code}"
                try:
                    reason = f"{signal.Signals(-code).name}, signal {-code}"
                except ValueError:
                    pass
            else:
                reason = f"exit code {code}"
            return ("died", reason)
        if message[0] == "ready":
            slot.ready, slot.pid = True, message[1]
            return None
        if message[0] == "broken":
            self.close()
            raise message[1]
        return message

    def _replace(self, slot: _Slot) -> _Slot:
        try:
            slot.conn.close()
        except OSError:
            pass
        fresh = self._spawn()
        self._slots[self._slots.index(slot)] = fresh
        return fresh

    def map(self, configs, *, latency="estimated", eval_size=None, full=False, should_stop=lambda: False):
        options = Options(latency, eval_size, full, self.timing_threads)
        jobs = (Evaluation(config, options) for config in configs)
        for index, job, payload, failure in self.run(jobs, exclusive=options.exclusive, should_stop=should_stop):
            yield Outcome(index, job.config, payload, failure)

    def run(self, jobs: Iterable, *, exclusive: bool = False, should_stop: Callable[[], bool] = lambda: False,
            depth: int | None = None) -> Iterator[tuple]:
        """Run ``jobs`` (objects with ``run(engine)``, consumed lazily) on the workers and yield
        ``(index, job, payload, failure)`` for each in completion order (``payload`` None when it failed).

        ``exclusive``: each job runs alone (nothing else in flight), as a measured timing needs. ``depth``: jobs in
        flight per worker for this run (default the pool's); 1 suits a few long, unequal jobs, which a second job
        queued behind the first would tie to a worker that may finish last."""
        source = enumerate(jobs)
        retries: deque[_Task] = deque()
        running: dict[int, _Task] = {}  # task id -> task, for this run only (an abandoned run's results are dropped)
        exhausted = False
        depth = 1 if exclusive else max(1, int(depth or self.depth))

        def next_task() -> _Task | None:
            nonlocal exhausted
            if retries:
                return retries.popleft()
            if exhausted or should_stop():
                return None
            item = next(source, None)
            if item is None:
                exhausted = True
                return None
            index, job = item
            return _Task(index, getattr(job, "config", None), job=job)

        def dispatch(slot: _Slot) -> bool:
            task = next_task()
            if task is None:
                return False
            task_id, self._next_task = self._next_task, self._next_task + 1
            task.attempts += 1
            try:
                slot.conn.send((task_id, task.job))
            except (BrokenPipeError, OSError):
                pass  # it died while idle: the wait below sees it and retries the task
            slot.tasks.append(task_id)
            running[task_id] = task
            return True

        while True:
            if exclusive:
                # a timing runs alone: wait until every worker is idle, then start one
                if not any(slot.tasks for slot in self._slots):
                    for slot in self._slots:
                        if slot.ready:
                            dispatch(slot)
                            break
            else:
                # breadth first: every worker gets one job before any gets a second
                for level in range(depth):
                    for slot in list(self._slots):
                        if slot.ready and len(slot.tasks) <= level and not dispatch(slot):
                            break
            if not running and (exhausted or should_stop()) and not retries:
                return
            if not running and not any(slot.ready for slot in self._slots):
                self._check_start()
            busy = [slot for slot in self._slots if slot.tasks or not slot.ready]
            handles = [slot.conn for slot in busy] + [slot.process.sentinel for slot in busy]
            wait(handles, timeout=1.0)
            for slot in busy:
                while True:  # every message already there (a worker may have finished two jobs)
                    message = self._receive(slot)
                    if message is None or message[0] == "died":
                        break
                    kind, task_id, payload = message
                    if task_id in slot.tasks:
                        slot.tasks.remove(task_id)
                    task = running.pop(task_id, None)
                    if task is None:
                        continue  # the result of an abandoned run
                    if kind == "done":
                        yield task.index, task.job, payload, ""
                    else:
                        yield task.index, task.job, None, payload
                if message is None:
                    continue
                # the worker died: the job it was running (the first sent) counts an attempt, the ones waiting
                # in its pipe never started and are simply sent again
                started = running.get(slot.task) if slot.task is not None else None
                lost = [running.pop(task_id) for task_id in slot.tasks if task_id in running]
                if not slot.ready:
                    self._early_deaths += 1
                    if self._early_deaths > self.workers + 2:  # they die while building the engine
                        raise BackendError(f"worker processes keep dying while they start ({message[1]})")
                self._replace(slot)
                for task in lost:
                    if task is not started:
                        task.attempts -= 1  # it never ran: this was not an attempt
                        retries.append(task)
                    elif task.attempts >= ATTEMPTS:
                        yield task.index, task.job, None, (f"worker process died ({message[1]}) {task.attempts} "
                                                           "times running it")
                    else:
                        retries.append(task)

    def _check_start(self) -> None:
        oldest = min(slot.started for slot in self._slots)
        if time.monotonic() - oldest > self.start_timeout:
            raise BackendError(f"no worker process started within {self.start_timeout:.0f} s")

    def close(self) -> None:
        """Ask every worker to stop, then kill any that does not within a few seconds."""
        slots, self._slots = self._slots, []
        for slot in slots:
            try:
                slot.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 5.0
        for slot in slots:
            # a worker busy with an abandoned task finishes it first: give it a moment, then kill it
            slot.process.join(timeout=max(deadline - time.monotonic(), 0.1))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(timeout=5)
            try:
                slot.conn.close()
            except OSError:
                pass


# -- Ray ------------------------------------------------------------------------------------------------------------

def import_ray():
    """The ray module, or a UsageError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError("--backend ray needs Ray: pip install qtradeoff[distributed]") from None
    return ray


def _payload(spec) -> tuple:
    """``(spec, files)``: the model and data files' bytes (a directory as a tar archive) under their names, so
    workers on machines without this filesystem can rebuild the engine; sample names travel as they are."""
    files: dict[str, tuple[str, bytes]] = {}
    for field in ("model", "data"):
        value = getattr(spec, field)
        if value is None:
            continue
        path = Path(value)
        if path.is_file():
            files[field] = (path.name, path.read_bytes())
        elif path.is_dir():
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as archive:
                archive.add(path, arcname=path.name)
            files[field] = (path.name + "/", buffer.getvalue())
    return spec, files


def _unpack(payload: tuple, directory: str):
    spec, files = payload
    changes = {}
    for field, (name, content) in files.items():
        if name.endswith("/"):
            with tarfile.open(fileobj=io.BytesIO(content), mode="r") as archive:
                archive.extractall(directory, filter="data")
            changes[field] = os.path.join(directory, name.rstrip("/"))
        else:
            target = os.path.join(directory, name)
            with open(target, "wb") as file:
                file.write(content)
            changes[field] = target
    return dataclasses.replace(spec, **changes)


def _ray_root(token: str) -> str:
    """The folder of one RayBackend's actors on a node: its actors' copies of the model and data live inside."""
    return os.path.join(tempfile.gettempdir(), f"qtradeoff-ray-{token}")


class _RayWorker:
    """A Ray actor: writes the model and data to a private temporary directory (inside its backend's
    :func:`_ray_root` on that node), builds its engine once."""

    def __init__(self, payload, threads: int, token: str):
        import torch

        from qtradeoff.core import runtime

        runtime.tune_allocator()
        torch.set_num_threads(threads)
        root = _ray_root(token)
        os.makedirs(root, exist_ok=True)
        self._directory = tempfile.mkdtemp(prefix="actor-", dir=root)
        self.engine = _unpack(payload, self._directory).build()

    def pid(self) -> int:
        return os.getpid()

    def directory(self) -> str:
        return self._directory

    def release(self) -> None:
        """Delete this actor's copies of the model and data (``ray.kill`` ends the process without running
        ``__del__``, so the backend calls this first)."""
        shutil.rmtree(self._directory, ignore_errors=True)

    def run(self, job):
        """Run one job (an object with ``run(engine)``: an Evaluation, LayerTrials, Score) on this actor's engine."""
        try:
            return "done", job.run(self.engine)
        except Exception as error:
            return "failed", _reason(error)

    def __del__(self):
        shutil.rmtree(getattr(self, "_directory", ""), ignore_errors=True)


class RayBackend(Backend):
    """Evaluations on Ray actors, one per worker (default: the cluster's CPUs), each with its engine.

    ``address`` None starts a local Ray instance (``num_cpus`` = ``workers`` or the cores) and shuts it down on
    :meth:`close`; otherwise it connects to that cluster (``"auto"``, ``ray://host:10001``...) and leaves it
    running. The model and data are put in the object store once; results come back in completion order
    (``ray.wait``), at most ``in_flight`` at a time (default two per actor, so an actor never idles waiting for
    its next task). A dead actor is replaced and its configuration retried once.
    """

    name = "ray"

    def __init__(self, spec, address: str | None = None, workers: int | None = None, *, threads: int | None = None,
                 in_flight: int | None = None):
        self._ray = ray = import_ray()
        self._started = False
        self._token = f"{os.getpid()}-{time.time_ns():x}"  # names this backend's actor folders on every node
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, include_dashboard=False, logging_level="warning",
                             log_to_driver=False)
                else:
                    ray.init(num_cpus=workers or available_cores(), include_dashboard=False,
                             logging_level="warning", log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise BackendError(f"cannot start or reach Ray at {address or 'a local instance'} "
                                   f"({_reason(error)})") from None
            self._started = True
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            self.workers = int(workers or cpus)
            # locally the actors share this machine's cores; on a cluster each actor reserved one CPU
            self.threads = int(threads or (max(1, available_cores() // self.workers) if not address else 1))
            self.in_flight = int(in_flight or 2 * self.workers)
            self._payload = ray.put(_payload(spec))  # once: every actor reads it from the object store
            self._actor_class = ray.remote(num_cpus=1, max_restarts=0)(_RayWorker)
            self._actors = [self._new_actor() for _ in range(self.workers)]
        except BaseException:
            self.close()
            raise

    def _new_actor(self):
        return self._actor_class.remote(self._payload, self.threads, self._token)

    def worker_pids(self) -> list[int]:
        return self._ray.get([actor.pid.remote() for actor in self._actors])

    def wait_ready(self) -> None:
        self.worker_pids()

    def map(self, configs, *, latency="estimated", eval_size=None, full=False, should_stop=lambda: False):
        options = Options(latency, eval_size, full)
        if options.exclusive:
            raise UsageError("measured latency is not timed on Ray (its actors share the cores); use the local or "
                             "pool backend, or estimated latency")
        jobs = (Evaluation(config, options) for config in configs)
        for index, job, payload, failure in self.run(jobs, should_stop=should_stop):
            yield Outcome(index, job.config, payload, failure)

    def run(self, jobs: Iterable, *, exclusive: bool = False, should_stop: Callable[[], bool] = lambda: False,
            depth: int | None = None) -> Iterator[tuple]:
        """Run ``jobs`` (objects with ``run(engine)``, consumed lazily) on the actors and yield
        ``(index, job, payload, failure)`` for each in completion order (``payload`` None when it failed), as
        :meth:`ProcessPool.run` does. ``depth``: jobs in flight per actor (default: the backend's ``in_flight``
        spread over the actors). ``exclusive`` (a job that must run alone, a timing) is refused: Ray's actors
        share the cores."""
        if exclusive:
            raise UsageError("a job that must run alone (a measured timing) does not run on Ray; use the local or "
                             "pool backend")
        ray = self._ray
        limit = self.in_flight if depth is None else max(1, int(depth)) * len(self._actors)
        source = enumerate(jobs)
        retries: deque[_Task] = deque()
        pending: dict = {}  # object ref -> (task, actor index)
        load = [0] * len(self._actors)
        exhausted = False
        while True:
            while len(pending) < limit and (retries or not (exhausted or should_stop())):
                if retries:
                    task = retries.popleft()
                else:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                        break
                    index, job = item
                    task = _Task(index, getattr(job, "config", None), job=job)
                task.attempts += 1
                actor = min(range(len(self._actors)), key=load.__getitem__)
                pending[self._actors[actor].run.remote(task.job)] = (task, actor)
                load[actor] += 1
            if not pending:
                return
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task, actor = pending.pop(ref)
                load[actor] -= 1
                try:
                    kind, payload = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as error:
                    self._replace(actor, pending, load)
                    if task.attempts >= ATTEMPTS:
                        yield (task.index, task.job, None,
                               f"Ray worker died ({type(error).__name__}) {task.attempts} times running it")
                    else:
                        retries.append(task)
                    continue
                yield (task.index, task.job, payload if kind == "done" else None, "" if kind == "done" else payload)

    def _replace(self, actor: int, pending: dict, load: list[int]) -> None:
        # its other queued tasks fail with the same error and are retried through the same path
        self._actors[actor] = self._new_actor()

    def close(self) -> None:
        ray = self._ray
        actors = getattr(self, "_actors", [])
        if actors:  # each live actor deletes its copy of the model and data (on whichever node it runs)
            released = [actor.release.remote() for actor in actors]
            try:
                ray.wait(released, num_returns=len(released), timeout=10)
            except Exception:  # noqa: BLE001 - a dead actor cannot release; the local folder goes below
                pass
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # already dead: nothing to release
                pass
        self._actors = []
        # this node's folder, with what actors killed mid-sweep (SIGKILL, OOM) left behind
        shutil.rmtree(_ray_root(self._token), ignore_errors=True)
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False


def open_backend(kind: str, spec, *, workers: int | None = None, address: str | None = None,
                 engine=None) -> Backend:
    """The backend a front end names: ``local`` (on ``engine``, or one built from ``spec``), ``pool`` or ``ray``."""
    if kind == "local":
        return InProcess(engine if engine is not None else spec)
    if kind == "pool":
        return ProcessPool(spec, workers)
    if kind == "ray":
        return RayBackend(spec, address=address, workers=workers)
    raise UsageError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["ATTEMPTS", "BACKENDS", "Backend", "BackendError", "Evaluation", "InProcess", "LayerTrials", "Options",
           "Outcome", "ProcessPool", "RayBackend", "Score", "available_cores", "evaluate_one", "import_ray",
           "open_backend"]
