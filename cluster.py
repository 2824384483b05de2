"""Running independent tasks on a Dask cluster: the folds of evaluate_speakers.py, the file partitions of
predict_live.py --file.

    client = cluster.connect("tcp://10.0.0.5:8786")   # or "local:4": a LocalCluster of 4 worker processes
    cluster.check_readable(client, ["/data/corpora"])  # every worker must see the corpora at that path
    for table, skipped in cluster.results_as_completed(client, "batch.classify_partition", [(m, e, paths), ...]):
        ...   # each partition's result, as it finishes

Workers get this project's modules from the client (ProjectWorker), so a worker needs only the
installed requirements, and read audio at the paths the client names, as they see them (shared storage).
A task of a worker that dies is rerun on another by Dask; its result reaches the client once.
"""
from __future__ import annotations

import importlib
import io
import logging
import os
import sys
import uuid
import zipfile
from pathlib import Path

import cloudpickle
from distributed import Client, KilledWorker, LocalCluster, WorkerPlugin, as_completed

from config import SCHEDULER_TIMEOUT_S

PROJECT = Path(__file__).resolve().parent


class ClusterError(Exception):
    """A cluster that cannot run the job: no scheduler, no workers, a path the workers cannot read."""


def project_code() -> bytes:
    """A zip of the project's modules (its top-level .py files), to be put on the workers' path."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(PROJECT.glob("*.py")):
            z.write(path, path.name)
    return buffer.getvalue()


class ProjectWorker(WorkerPlugin):
    """Sets up each worker, including those that join or restart later: puts the project's code on its path,
    and limits TensorFlow's and the feature code's threads to the worker's share of the cores (its Dask
    `nthreads`), so that several workers on one machine do not oversubscribe it."""

    name = "speech-emotion-project"

    def __init__(self, code: bytes):
        self.code = code

    def setup(self, worker):
        path = Path(worker.local_directory) / "speech-emotion-project.zip"
        path.write_bytes(self.code)
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
        limit_threads(worker.state.nthreads)


def limit_threads(n: int) -> None:
    """Let this process's TensorFlow, BLAS/OpenMP and feature extraction use n threads."""
    from threadpoolctl import threadpool_limits
    os.environ["SER_THREADS"] = str(n)  # config.extraction_threads
    os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(n)
    threadpool_limits(n)
    if "tensorflow" in sys.modules:  # already running: the variables above come too late for it
        import tensorflow as tf
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        except RuntimeError:  # TensorFlow has started its thread pools; they stay as they are
            pass


# The plugin travels by value, so a worker without this project's code can unpickle it.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def connect(address: str, timeout: float = SCHEDULER_TIMEOUT_S) -> Client:
    """A Client of the scheduler at `address` ("tcp://host:port"), or of a new LocalCluster of N worker
    processes for "local:N" (each with an equal share of this machine's cores), with the project's code and
    thread limits on every worker. Raises ClusterError if no scheduler answers, or no worker joins, within
    `timeout` seconds."""
    # Routine messages of the scheduler, nannies and workers (and a slow worker's shutdown) stay out of the
    # user's terminal; what goes wrong reaches the client as an exception.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    if address.startswith("local:"):
        n = int(address.removeprefix("local:"))
        # The workers are this process's children and share its output: keep their routine logs out.
        local = LocalCluster(n_workers=n, threads_per_worker=max(1, (os.cpu_count() or 1) // n), processes=True,
                             dashboard_address=None, silence_logs=logging.CRITICAL)
        client = Client(local)
    else:
        try:
            client = Client(address, timeout=timeout)
        except (OSError, TimeoutError):
            raise ClusterError(f"no Dask scheduler answered at {address} within {timeout:g} s "
                               f"(--scheduler-timeout)") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        client.close()
        raise ClusterError(f"the Dask scheduler at {address} has no workers: none joined within {timeout:g} s "
                           f"(--scheduler-timeout)") from None
    client.register_plugin(ProjectWorker(project_code()))
    return client


def unreadable(paths: list[str]) -> list[str]:
    """Those of paths (files or folders) that this machine cannot read."""
    return [p for p in paths if not os.access(p, os.R_OK) or (os.path.isdir(p) and not os.access(p, os.X_OK))]


def check_readable(client: Client, paths: list[str]) -> None:
    """Raise ClusterError naming a worker and the first path it cannot read, if any worker cannot."""
    for worker, missing in sorted(client.run(unreadable, list(paths)).items()):
        if missing:
            raise ClusterError(f"worker {worker} cannot read {missing[0]}; the workers must see the data at the "
                               f"same path as this machine (shared storage)")


def project_call(function: str, *args):
    """The project's function named "module.function" called with args, on a worker."""
    module, name = function.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(*args)


def submit(client: Client, function: str, *args):
    """A future of project_call(function, *args) on the cluster. The function travels by name, so the scheduler,
    which unpickles every task, needs none of the project's code or its libraries."""
    def task():  # a closure: Dask pickles it, and this module, by value
        return project_call(function, *args)

    return client.submit(task, key=f"{function}-{uuid.uuid4().hex}")


def results_as_completed(client: Client, function: str, arguments: list[tuple]):
    """Yield the project's function (by name, as submit takes it) of each tuple in arguments, in the order they
    finish on the cluster.

    A task whose worker is lost is rerun on another worker by Dask (up to its allowed-failures); each task's
    result is yielded once, since only the client collects them.
    """
    futures = [submit(client, function, *a) for a in arguments]
    for future in as_completed(futures):
        try:
            result = future.result()
        except KilledWorker as e:
            raise ClusterError(f"a task killed every worker that ran it ({e}); see the workers' logs, for "
                               f"memory above all") from None
        future.release()
        yield result
