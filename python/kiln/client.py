"""Defines `Client`, a small client of Kiln's native REST API (docs/api.md) for
notebooks and scripts: submit jobs with their code (single, static distributed or
elastic), watch them, scale elastic ones, read logs and metrics, and run hyperparameter
searches (experiments) and read their trials, and keep trained models in the registry.

Standard library only (urllib). Every HTTP error becomes a `kiln.KilnError` in one
place, `Client._request`, through `kiln.errors.error_from_http`.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import io
import json
import os
import shlex
import socket
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

from kiln.errors import KilnError, error_from_http

__all__ = ["Client", "TERMINAL_STATES", "EXPERIMENT_END_STATES"]

#: Job states after which a job never changes again.
TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "KILLED"})
#: Experiment states in which an experiment changes no more (unless restarted).
EXPERIMENT_END_STATES = frozenset({"FINISHED", "FAILED", "STOPPED"})

_DEFAULT_URL = "http://127.0.0.1:8470"
_SKIPPED_DIRS = frozenset({".git", "__pycache__", ".hg", ".svn"})
# How long logs(follow=True) keeps reconnecting without receiving anything.
_FOLLOW_GIVE_UP_S = 120.0
# A follow stream silent this long is reopened (a half-open connection looks silent).
_FOLLOW_READ_TIMEOUT_S = 300.0


class Client:
    """A connection to a Kiln master.

    Authentication: a token (``Authorization: Bearer``) if given, else HTTP Basic with
    user and password, else none.

    Parameters
    ----------
    url : str, optional
        Base URL; defaults to ``KILN_URL``, then ``KILN_MASTER``, then
        ``http://127.0.0.1:8470``.
    user, password : str, optional
        Default to ``KILN_USER`` and ``KILN_PASSWORD``.
    token : str, optional
        Defaults to ``KILN_TOKEN``.
    timeout : float, optional
        Socket timeout of each request in seconds (30).

    Notes
    -----
    Every method raises `KilnError` when the master answers with an error (``status``,
    ``code`` and ``message`` come from the error body) or cannot be reached (``status``
    None, ``code`` ``"UNAVAILABLE"``). Not thread-safe to mutate; calls themselves hold
    no shared state.

    Examples
    --------
    >>> c = Client("http://127.0.0.1:8470", user="admin", password="secret")
    >>> job = c.submit(["python3", "train.py"], package="./fashion_mnist", slots=2)
    >>> for line in c.logs(job["id"], follow=True):
    ...     print(line["text"])
    >>> c.wait(job["id"])["state"]
    'FINISHED'
    >>> job = c.submit("python3 train.py", package=".", min_workers=1, max_workers=4)
    >>> c.scale(job["id"], 3)["workers"]["target"]
    3
    """

    def __init__(self, url: Optional[str] = None, user: Optional[str] = None,
                 password: Optional[str] = None, token: Optional[str] = None,
                 timeout: float = 30.0) -> None:
        self.url = (url or os.environ.get("KILN_URL") or os.environ.get("KILN_MASTER")
                    or _DEFAULT_URL).rstrip("/")
        user = user if user is not None else os.environ.get("KILN_USER")
        password = password if password is not None else os.environ.get("KILN_PASSWORD")
        token = token if token is not None else os.environ.get("KILN_TOKEN")
        self._headers: dict[str, str] = {}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif user:
            pair = f"{user}:{password or ''}".encode("utf-8")
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    # ---- transport: the one place HTTP errors are mapped --------------------------

    def _open(self, method: str, path: str, query: Optional[Mapping[str, Any]] = None,
              body: Optional[bytes] = None, content_type: Optional[str] = None,
              timeout: Optional[float] = None) -> Any:
        """Sends a request and returns the open response; raises `KilnError`."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(
                [(k, v) for k, vs in query.items() if vs is not None
                 for v in (vs if isinstance(vs, (list, tuple)) else [vs])])
        headers = dict(self._headers)
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            with e:
                raise error_from_http(e.code, e.read() or b"", str(e.reason)) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise KilnError(f"cannot reach the Kiln master at {self.url}: {reason}",
                            code="UNAVAILABLE") from None

    def _request(self, method: str, path: str,
                 query: Optional[Mapping[str, Any]] = None, json_body: Any = None,
                 body: Optional[bytes] = None,
                 content_type: Optional[str] = None) -> Any:
        """Sends a request and returns the parsed JSON response (None if empty)."""
        if json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            content_type = "application/json"
        with self._open(method, path, query, body, content_type) as response:
            data = response.read()
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise KilnError(f"{method} {path}: the master answered with non-JSON "
                            f"{data[:200]!r}", status=response.status,
                            code="INTERNAL") from None

    # ---- jobs -------------------------------------------------------------------

    def submit(self, command: Union[str, Sequence[str]],
               package: Optional[Union[str, os.PathLike[str]]] = None, slots: int = 1,
               gpus: int = 0, env: Optional[Mapping[str, str]] = None,
               config: Optional[Mapping[str, Any]] = None,
               name: Optional[str] = None, workers: Optional[int] = None,
               min_workers: Optional[int] = None, max_workers: Optional[int] = None,
               min_workers_timeout_s: Optional[int] = None,
               max_worker_failures: Optional[int] = None) -> dict[str, Any]:
        """Submits a job, uploading its code first.

        A job is a single process unless it asks for workers: ``workers=N`` runs a
        static distributed job of exactly N worker processes (placed all at once, with
        PyTorch's ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ... set), and
        ``min_workers=A, max_workers=B`` an elastic one that Kiln runs with A to B
        workers and may grow or shrink while it runs (see `scale`; the workers use
        ``kiln.elastic``). ``slots`` and ``gpus`` are then per worker.

        Parameters
        ----------
        command : str or sequence of str
            The command; a string is split like a shell would (``shlex.split``).
        package : path, optional
            A folder (sent as a gzip tar of its contents, without ``.git`` and
            ``__pycache__``; symlinked folders are skipped, symlinked files are sent as
            files) or a single file. Unpacked into the job's working directory.
        slots, gpus : int, optional
            CPU slots (1) and GPUs (0).
        env : mapping of str to str, optional
            Extra environment variables.
        config : mapping, optional
            Written to ``config.json`` in the working directory.
        name : str, optional
            Job name; the master defaults it to the command's first word.
        workers : int, optional
            A static distributed job of exactly this many workers.
        min_workers, max_workers : int, optional
            An elastic job of ``min_workers`` to ``max_workers`` workers
            (1 <= min_workers <= max_workers); give both.
        min_workers_timeout_s : int, optional
            Elastic jobs: how long the job may run below ``min_workers`` before it
            fails (the master's default is 600).
        max_worker_failures : int, optional
            Elastic jobs: worker crashes tolerated before the job fails (the master's
            default is 3 * max_workers + 3).

        Returns
        -------
        dict
            The job record (``id``, ``state``, ...; a distributed job's record also has
            ``workers``, ``tasks`` and ``generations``).

        Raises
        ------
        KilnError
            E.g. ``INVALID_ARGUMENT`` / ``FAILED_PRECONDITION`` (400) if no agent can
            ever satisfy the resources.
        ValueError
            For an empty command or a bad combination of the worker arguments (before
            anything is uploaded).
        FileNotFoundError
            If ``package`` does not exist.
        """
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not argv:
            raise ValueError("command must not be empty")
        spec: dict[str, Any] = {"command": argv,
                                "resources": {"slots": slots, "gpus": gpus}}
        spec.update(_workers_fields(workers, min_workers, max_workers,
                                    min_workers_timeout_s, max_worker_failures))
        if name is not None:
            spec["name"] = name
        if env:
            spec["env"] = {str(k): str(v) for k, v in env.items()}
        if config is not None:
            spec["config"] = dict(config)
        if package is not None:
            spec["package"] = {"id": self.upload(package)["id"]}
        return self._request("POST", "/api/v1/jobs", json_body=spec)

    def upload(self, package: Union[str, os.PathLike[str]]) -> dict[str, Any]:
        """Uploads a code package (see `submit`) and returns its record
        ``{"id", "name", "kind", "size"}``. Packages are content-addressed, and folders
        are packed reproducibly, so uploading unchanged code again gives the same id."""
        path = os.fspath(package)
        if os.path.isdir(path):
            data = _pack_folder(path)
            filename = (os.path.basename(os.path.abspath(path)) or "package") + ".tar.gz"
            content_type = "application/gzip"
        elif os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read()
            filename = os.path.basename(path)
            content_type = "application/octet-stream"
        else:
            raise FileNotFoundError(f"package {path!r} is neither a folder nor a file")
        return self._request("POST", "/api/v1/packages", query={"name": filename},
                             body=data, content_type=content_type)

    def job(self, id: Union[int, str]) -> dict[str, Any]:
        """Returns the job record of job ``id``. Raises `KilnError` (404) if unknown."""
        return self._request("GET", f"/api/v1/jobs/{_quote(id)}")

    def jobs(self, state: Optional[Union[str, Sequence[str]]] = None,
             limit: int = 50) -> list[dict[str, Any]]:
        """Returns up to ``limit`` job records, newest first.

        Parameters
        ----------
        state : str or sequence of str, optional
            Only jobs in these states (``"RUNNING"``, ...).
        limit : int, optional
            How many at most (50); pages are followed until that many are found.
        """
        out: list[dict[str, Any]] = []
        page_token: Optional[str] = None
        while len(out) < limit:
            query: dict[str, Any] = {"limit": limit - len(out)}
            if state is not None:
                query["state"] = [state] if isinstance(state, str) else list(state)
            if page_token:
                query["page_token"] = page_token
            page = self._request("GET", "/api/v1/jobs", query=query)
            out.extend(page.get("jobs", []))
            page_token = page.get("next_page_token")
            if not page_token or not page.get("jobs"):
                break
        return out[:limit]

    def scale(self, id: Union[int, str], workers: int) -> dict[str, Any]:
        """Sets the number of workers elastic job ``id`` should run and returns its
        record (``record["workers"]`` is ``{"min", "max", "target", "live"}``).

        Kiln grows the job toward ``workers`` as slots free up and shrinks it by asking
        its newest workers to leave; the others keep training.

        Raises
        ------
        KilnError
            ``INVALID_ARGUMENT`` (400) when ``workers`` is outside
            [min_workers, max_workers]; 409 for a job that is not elastic or has ended.
        """
        return self._request("POST", f"/api/v1/jobs/{_quote(id)}/scale",
                             json_body={"workers": workers})

    def tasks(self, id: Union[int, str]) -> list[dict[str, Any]]:
        """Returns the worker processes of distributed job ``id``
        ``[{"id", "state", "agent", "exit_code", "reason"}]`` (the task id is the
        worker's ``KILN_TASK_ID``); empty for a single-process job."""
        return self.job(id).get("tasks") or []

    def generations(self, id: Union[int, str]) -> list[dict[str, Any]]:
        """Returns the rendezvous generations of elastic job ``id``, oldest first:
        ``[{"id", "world_size", "members", "started_at", "reason"}]``, where
        ``members`` lists task ids by rank. Each change of membership (a worker joined,
        crashed or was asked to leave) opens a new generation. Empty for other jobs."""
        return self.job(id).get("generations") or []

    def kill(self, id: Union[int, str]) -> dict[str, Any]:
        """Kills job ``id`` (SIGTERM, then SIGKILL after the grace period; a queued job
        ends at once) and returns its record."""
        return self._request("POST", f"/api/v1/jobs/{_quote(id)}/kill")

    def events(self, id: Union[int, str]) -> list[dict[str, Any]]:
        """Returns the job's events ``[{"time", "type", "message"}]``."""
        return self._request("GET", f"/api/v1/jobs/{_quote(id)}/events").get("events", [])

    def metrics(self, id: Union[int, str],
                name: Optional[str] = None) -> list[dict[str, Any]]:
        """Returns the job's metric series
        ``[{"name", "group", "points": [{"step", "value", "time"}]}]``.

        Parameters
        ----------
        name : str, optional
            Only the series with this metric name.
        """
        reply = self._request("GET", f"/api/v1/jobs/{_quote(id)}/metrics",
                              query={"name": name})
        return reply.get("series", [])

    def wait(self, id: Union[int, str], poll: float = 0.5,
             timeout: Optional[float] = None) -> dict[str, Any]:
        """Blocks until job ``id`` is FINISHED, FAILED or KILLED; returns its record.

        Raises
        ------
        TimeoutError
            If ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.job(id)
            if record.get("state") in TERMINAL_STATES:
                return record
            if deadline is not None and time.monotonic() + poll > deadline:
                raise TimeoutError(f"job {id} still {record.get('state')} after "
                                   f"{timeout} s")
            time.sleep(poll)

    # ---- experiments (hyperparameter search) ------------------------------------

    def create_experiment(self, spec: Mapping[str, Any],
                          code: Optional[Union[str, os.PathLike[str]]] = None
                          ) -> dict[str, Any]:
        """Creates a hyperparameter search and starts its first trials.

        Parameters
        ----------
        spec : mapping
            The request of ``POST /api/v1/experiments`` (docs/api.md, "Experiments"):
            ``command``, ``search_space`` and ``objective`` are required, e.g.
            ``{"command": ["python3", "train.py"], "search_space": {"lr": {"type":
            "double", "low": 1e-3, "high": 0.3, "log": True}}, "objective": {"metric":
            "accuracy", "goal": "maximize"}, "algorithm": "tpe", "max_trials": 12,
            "parallelism": 2}``. A ``"code"`` key, as in YAML experiment files, is a
            folder to upload (like ``code``).
        code : path, optional
            A folder (or file) uploaded as every trial's code package (see `upload`);
            sets ``spec["package"]``.

        Returns
        -------
        dict
            The experiment record (``id``, ``name``, ``state``, ``progress``, ``best``,
            ``spec``, ...).

        Raises
        ------
        KilnError
            ``INVALID_ARGUMENT`` (400) naming the field for a bad space, algorithm or
            objective; ``ALREADY_EXISTS`` (409) for a taken name;
            ``FAILED_PRECONDITION`` (409) when no agent could ever run a trial.
        """
        body = dict(spec)
        code = code if code is not None else body.pop("code", None)
        if code is not None:
            if "package" in body:
                raise ValueError("give either code (a folder to upload) or "
                                 "spec['package'], not both")
            body["package"] = {"id": self.upload(code)["id"]}
        return self._request("POST", "/api/v1/experiments", json_body=body)

    def experiments(self) -> list[dict[str, Any]]:
        """Returns the caller's experiments (an admin's: everyone's), newest first,
        without their ``spec``."""
        return self._request("GET", "/api/v1/experiments").get("experiments", [])

    def experiment(self, id: Union[int, str]) -> dict[str, Any]:
        """Returns experiment ``id`` (an id or a name): state, ``progress`` counts,
        ``best`` (number, value, config, job_id) and ``spec``. `KilnError` 404 if unknown
        or not the caller's."""
        return self._request("GET", f"/api/v1/experiments/{_quote(id)}")

    def trials(self, id: Union[int, str]) -> list[dict[str, Any]]:
        """Returns the experiment's trials in order: ``number``, ``state``, ``config``,
        ``params`` (the searched values), ``value``, ``intermediate``
        (``[{"step", "value"}]``), ``budget``, ``job_id``, ``attempts``, ``reason`` and
        times."""
        return self._request("GET", f"/api/v1/experiments/{_quote(id)}/trials").get(
            "trials", [])

    def best(self, id: Union[int, str]) -> dict[str, Any]:
        """Returns the best trial so far (its ``config``, ``value``, ``number``,
        ``job_id``, ``metric``). `KilnError` 404 while no trial has finished."""
        return self._request("GET", f"/api/v1/experiments/{_quote(id)}/best")

    def stop_experiment(self, id: Union[int, str], force: bool = False) -> dict[str, Any]:
        """Stops the experiment: no new trials; running trials are killed and marked
        STOPPED. Returns its record. ``force`` ends it even when its jobs do not answer.
        `KilnError` 409 if it has already ended."""
        return self._request("POST", f"/api/v1/experiments/{_quote(id)}/stop",
                             query={"force": "true"} if force else None)

    def restart_experiment(self, id: Union[int, str]) -> dict[str, Any]:
        """Resumes a STOPPED or FAILED experiment; finished trials are kept."""
        return self._request("POST", f"/api/v1/experiments/{_quote(id)}/restart")

    def delete_experiment(self, id: Union[int, str]) -> dict[str, Any]:
        """Deletes an ended experiment and its trial records (not the trials' jobs)."""
        return self._request("DELETE", f"/api/v1/experiments/{_quote(id)}")

    def algorithms(self) -> list[dict[str, Any]]:
        """Returns the search algorithms: ``native_name``, WMLA ``name``,
        ``native_params``, ``params`` (WMLA's), ``description``."""
        return self._request("GET", "/api/v1/experiments/algorithms").get("algorithms", [])

    def wait_experiment(self, id: Union[int, str], timeout: Optional[float] = None,
                        poll: float = 1.0) -> dict[str, Any]:
        """Blocks until the experiment is FINISHED, FAILED or STOPPED; returns its record.

        Raises
        ------
        TimeoutError
            If ``timeout`` seconds pass first (the experiment keeps running).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.experiment(id)
            if record.get("state") in EXPERIMENT_END_STATES:
                return record
            if deadline is not None and time.monotonic() + poll > deadline:
                progress = record.get("progress") or {}
                raise TimeoutError(f"experiment {id} still {record.get('state')} after "
                                   f"{timeout} s ({progress.get('complete', 0)} trials "
                                   f"complete, {progress.get('running', 0)} running)")
            time.sleep(poll)

    # ---- model registry ---------------------------------------------------------

    def register_model(self, name: str, job_id: Optional[Union[int, str]] = None,
                       file: Optional[Union[str, os.PathLike[str]]] = None,
                       signature: Optional[Union[Mapping[str, Any], str,
                                                 os.PathLike[str]]] = None,
                       path: Optional[str] = None, description: Optional[str] = None,
                       metrics: Optional[Mapping[str, float]] = None) -> dict[str, Any]:
        """Registers a model version: a new model ``name``, or the next version of yours.

        Give exactly one source: ``job_id``, a FINISHED job that saved its model with
        `kiln.save_model` (its signature, final metrics and hyperparameters come along),
        or ``file``, a local TorchScript file (uploaded in the same request).

        Parameters
        ----------
        name : str
            Model name: letters, digits, ``.``, ``_``, ``-`` (it is the KServe name too).
        job_id : int, optional
            The job whose ``$RESULT_DIR/model/model.pt`` to register.
        file : path, optional
            A TorchScript file (``torch.jit.save``'s zip archive).
        signature : dict or path, optional
            ``{"inputs": [{"name", "dtype", "shape"}], "outputs": [...]}`` (shapes per
            sample) or a JSON file holding it; needed with ``file``, overrides the job's
            ``model/signature.json``.
        path : str, optional
            With ``job_id``: the model's path under the job's RESULT_DIR
            (``model/model.pt``).
        description : str, optional
            Kept on a new model.
        metrics : mapping of str to float, optional
            Overrides the job's final metric values.

        Returns
        -------
        dict
            The version: ``model``, ``version``, ``signature``, ``metrics``, ``lineage``,
            ``file`` and ``created_at``.
        """
        if (job_id is None) == (file is None):
            raise ValueError("give either job_id (a finished job's saved model) or file "
                             "(a TorchScript file), not both or neither")
        body: dict[str, Any] = {"name": name}
        if description is not None:
            body["description"] = description
        if signature is not None:
            if isinstance(signature, (str, os.PathLike)):
                with open(signature, encoding="utf-8") as f:
                    signature = json.load(f)
            body["signature"] = dict(signature)  # type: ignore[arg-type]
        if metrics is not None:
            body["metrics"] = dict(metrics)
        if path is not None:
            body["path"] = path
        if job_id is not None:
            body["job_id"] = int(job_id)
            return self._request("POST", "/api/v1/models", json_body=body)
        file_path = os.fspath(file)  # type: ignore[arg-type]
        with open(file_path, "rb") as f:
            data = f.read()
        form, content_type = _multipart_form(
            [("data", None, json.dumps(body).encode("utf-8"), "application/json"),
             ("file", os.path.basename(file_path), data, "application/octet-stream")])
        return self._request("POST", "/api/v1/models", body=form, content_type=content_type)

    def models(self) -> list[dict[str, Any]]:
        """Returns your models (an admin's: everyone's), newest first, each with
        ``latest_version`` and ``latest`` (that version's record)."""
        return self._request("GET", "/api/v1/models").get("models", [])

    def model(self, name: Union[int, str],
              version: Optional[int] = None) -> dict[str, Any]:
        """Returns model ``name`` (or id) with all its ``versions``, or with ``version``
        that one version's record."""
        target = f"/api/v1/models/{_quote(name)}"
        if version is not None:
            target += f"/versions/{int(version)}"
        return self._request("GET", target)

    def model_content(self, name: Union[int, str], version: int) -> bytes:
        """Returns the bytes of a version's TorchScript file (``torch.jit.load`` takes
        an ``io.BytesIO`` of them)."""
        with self._open("GET", f"/api/v1/models/{_quote(name)}/versions/{int(version)}"
                        "/content") as response:
            return response.read()

    def delete_model(self, name: Union[int, str],
                     version: Optional[int] = None) -> dict[str, Any]:
        """Deletes a model with all its versions, or only ``version``. Raises
        `KilnError` (409) while a deployment serves it."""
        target = f"/api/v1/models/{_quote(name)}"
        if version is not None:
            target += f"/versions/{int(version)}"
        return self._request("DELETE", target)

    # ---- deployments --------------------------------------------------------------

    def deploy(self, name: str, model: Union[int, str], version: Optional[int] = None,
               replicas: int = 1, slots: Optional[int] = None,
               max_batch_size: Optional[int] = None,
               max_queue_delay_us: Optional[int] = None, wait: bool = False,
               timeout: Optional[float] = None) -> dict[str, Any]:
        """Deploys ``version`` (default: the latest) of registered model ``model`` on
        ``replicas`` kiln-serve replicas and returns the deployment record (state
        PENDING). With ``wait``, blocks until every replica serves (see
        `wait_deployment`)."""
        body: dict[str, Any] = {"name": name, "model": str(model), "replicas": replicas}
        for key, value in (("version", version), ("slots", slots),
                           ("max_batch_size", max_batch_size),
                           ("max_queue_delay_us", max_queue_delay_us)):
            if value is not None:
                body[key] = value
        record = self._request("POST", "/api/v1/deployments", json_body=body)
        return self.wait_deployment(record["id"], timeout=timeout) if wait else record

    def deployment(self, name: Union[int, str]) -> dict[str, Any]:
        """Returns deployment ``name`` (or id): ``state`` (PENDING, READY, UPDATING,
        FAILED, STOPPED), ``reason``, ``model``, ``version``, ``spec`` (replicas, slots,
        batching), ``ready_replicas``, ``replicas`` (``job_id``, ``version``,
        ``address``, ``state``), ``signature`` and ``endpoints``."""
        return self._request("GET", f"/api/v1/deployments/{_quote(name)}")

    def deployments(self) -> list[dict[str, Any]]:
        """Returns your deployments (an admin's: everyone's)."""
        return self._request("GET", "/api/v1/deployments").get("deployments", [])

    def update_deployment(self, name: Union[int, str], version: Optional[int] = None,
                          replicas: Optional[int] = None,
                          max_batch_size: Optional[int] = None,
                          max_queue_delay_us: Optional[int] = None, wait: bool = False,
                          timeout: Optional[float] = None) -> dict[str, Any]:
        """Changes a deployment. A new ``version`` (or batching) rolls out replica by
        replica without dropping requests; a version that fails to load is rolled back
        (state READY on the old version, ``reason`` says why). With ``wait``, blocks
        until the rollout is over and raises `KilnError` if it was rolled back."""
        body = {key: value for key, value in (
            ("version", version), ("replicas", replicas), ("max_batch_size", max_batch_size),
            ("max_queue_delay_us", max_queue_delay_us)) if value is not None}
        record = self._request("PATCH", f"/api/v1/deployments/{_quote(name)}",
                               json_body=body)
        if not wait:
            return record
        return self.wait_deployment(record["id"], version=version, timeout=timeout)

    def delete_deployment(self, name: Union[int, str]) -> dict[str, Any]:
        """Deletes a deployment: it leaves routing at once, its replicas drain and stop,
        then the record goes. Returns the record in state STOPPED."""
        return self._request("DELETE", f"/api/v1/deployments/{_quote(name)}")

    def predict(self, deployment: Union[int, str], inputs: Any) -> dict[str, Any]:
        """Scores ``inputs`` on a deployment through the master (the native payload):
        ``{"image": rows}`` for named inputs or a list of sample rows for a one-input
        model; a ``torch.Tensor`` or anything with ``tolist()`` is converted. Returns
        ``{"model", "version", "outputs": {"name": rows}}``. `KilnError` 400 names what
        does not match the signature."""
        if hasattr(inputs, "tolist") and not isinstance(inputs, (list, dict)):
            inputs = inputs.tolist()
        elif isinstance(inputs, Mapping):
            inputs = {k: (v.tolist() if hasattr(v, "tolist") else v)
                      for k, v in inputs.items()}
        return self._request("POST", f"/api/v1/deployments/{_quote(deployment)}/predict",
                             json_body={"inputs": inputs})

    def wait_deployment(self, name: Union[int, str], version: Optional[int] = None,
                        timeout: Optional[float] = None, poll: float = 0.5) -> dict[str, Any]:
        """Blocks until the deployment is READY on ``version`` (default: any) with every
        replica ready; returns its record.

        Raises
        ------
        KilnError
            If it is FAILED or STOPPED, or a rollout to ``version`` was rolled back.
        TimeoutError
            If ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.deployment(name)
            state = record.get("state")
            if state in ("FAILED", "STOPPED") or (
                    version is not None and record.get("version") != version
                    and state != "UPDATING"):
                raise KilnError(f"deployment {record.get('name')} {state} on version "
                                f"{record.get('version')}: {record.get('reason')}",
                                code="FAILED_PRECONDITION")
            want = (record.get("spec") or {}).get("replicas", 1)
            replicas = record.get("replicas") or []
            if (state == "READY" and record.get("ready_replicas", 0) >= want
                    and all(r.get("state") == "READY"
                            and r.get("version") == record.get("version")
                            for r in replicas)):
                return record
            if deadline is not None and time.monotonic() + poll > deadline:
                raise TimeoutError(f"deployment {name} still {state} after {timeout} s "
                                   f"({record.get('ready_replicas', 0)}/{want} replicas "
                                   f"ready)")
            time.sleep(poll)

    # ---- logs -------------------------------------------------------------------

    def logs(self, id: Union[int, str], follow: bool = False,
             after: int = 0) -> Iterator[dict[str, Any]]:
        """Yields the job's log lines ``{"seq", "time", "stream", "text"}`` in order.

        Parameters
        ----------
        follow : bool, optional
            False (default): the lines there are now, then stop. True: stream new lines
            until the job has ended and every line was returned; a dropped connection
            (e.g. a master restart) is resumed after the last line received, so no
            line is repeated or lost. Gives up with `KilnError` after
            120 s of failed reconnects.
        after : int, optional
            Start after this line seq (0: from the first line).
        """
        if not follow:
            while True:
                lines, after, done = self._log_page(id, after)
                yield from lines
                if done or not lines:
                    return
        last = after
        failing_since: Optional[float] = None
        backoff = 0.2
        while True:
            try:
                with self._open("GET", f"/api/v1/jobs/{_quote(id)}/logs",
                                query={"follow": "true", "after": last},
                                timeout=_FOLLOW_READ_TIMEOUT_S) as stream:
                    for raw in stream:
                        raw = raw.strip()
                        if not raw:
                            continue
                        line = json.loads(raw)
                        seq = line.get("seq")
                        if isinstance(seq, int):
                            if seq <= last:
                                continue
                            last = seq
                        failing_since, backoff = None, 0.2
                        yield line
                # The stream ended cleanly: the job ended, unless the master closed
                # it early (restart, proxy timeout). Catch up by pages and ask.
                while True:
                    lines, last, done = self._log_page(id, last)
                    yield from lines
                    if done:
                        return
                    if not lines:
                        break
            except socket.timeout:
                # The job printed nothing for a while; that is not a failure.
                failing_since = None
                continue
            except KilnError as e:
                if e.status is not None and e.status < 500:
                    raise
                failing_since = self._check_follow_failure(id, failing_since, e)
            except (OSError, ValueError, http.client.HTTPException) as e:
                # A connection dropped mid-stream, or a line arrived truncated.
                failing_since = self._check_follow_failure(id, failing_since, e)
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _check_follow_failure(self, id: Union[int, str], failing_since: Optional[float],
                              error: BaseException) -> float:
        """Returns when failures began; raises once they last too long."""
        now = time.monotonic()
        if failing_since is None:
            return now
        if now - failing_since > _FOLLOW_GIVE_UP_S:
            raise KilnError(f"lost the log stream of job {id} and could not resume it "
                            f"for {_FOLLOW_GIVE_UP_S:g} s: {error}", code="UNAVAILABLE")
        return failing_since

    def _log_page(self, id: Union[int, str],
                  after: int) -> tuple[list[dict[str, Any]], int, bool]:
        """Fetches one page of lines after ``after``; returns (lines, new after, done)."""
        page = self._request("GET", f"/api/v1/jobs/{_quote(id)}/logs",
                             query={"after": after})
        lines = [line for line in page.get("lines", [])
                 if not isinstance(line.get("seq"), int) or line["seq"] > after]
        seqs = [line["seq"] for line in lines if isinstance(line.get("seq"), int)]
        nxt = page.get("next")
        new_after = max([after, *seqs, *([nxt] if isinstance(nxt, int) else [])])
        return lines, new_after, bool(page.get("done"))


def _workers_fields(workers: Optional[int], min_workers: Optional[int],
                    max_workers: Optional[int], min_workers_timeout_s: Optional[int],
                    max_worker_failures: Optional[int]) -> dict[str, Any]:
    """The distributed-job fields of a job request; ValueError for a bad combination."""
    elastic = min_workers is not None or max_workers is not None
    elastic_options = {k: v for k, v in (("min_workers_timeout_s", min_workers_timeout_s),
                                         ("max_worker_failures", max_worker_failures))
                       if v is not None}
    if workers is not None and elastic:
        raise ValueError("give either workers=N (a static job) or min_workers and "
                         "max_workers (an elastic job), not both")
    if elastic_options and not elastic:
        raise ValueError(f"{' and '.join(elastic_options)} apply only to elastic jobs; "
                         "give min_workers and max_workers")
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a whole number of at least 1, got {workers!r}")
        return {"workers": workers}
    if not elastic:
        return {}
    if min_workers is None or max_workers is None:
        raise ValueError("an elastic job needs both min_workers and max_workers")
    for field, value in (("min_workers", min_workers), ("max_workers", max_workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field} must be a whole number of at least 1, got {value!r}")
    if min_workers > max_workers:
        raise ValueError(f"min_workers ({min_workers}) must not exceed max_workers "
                         f"({max_workers})")
    return {"min_workers": min_workers, "max_workers": max_workers, **elastic_options}


def _quote(id: Union[int, str]) -> str:
    return urllib.parse.quote(str(id), safe="")


def _multipart_form(parts: Sequence[tuple[str, Optional[str], bytes, str]]) -> tuple[bytes, str]:
    """Encodes ``(name, filename, data, content_type)`` parts as multipart/form-data;
    returns the body and its Content-Type."""
    boundary = "kiln-" + os.urandom(16).hex()
    out = io.BytesIO()
    for name, filename, data, content_type in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
            disposition += f'; filename="{safe}"'
        out.write(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                  f"Content-Type: {content_type}\r\n\r\n".encode("utf-8"))
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode("utf-8"))
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _pack_folder(folder: str) -> bytes:
    """Packs ``folder``'s contents into a reproducible gzip tar, in memory.

    Entries are sorted and have normalized owners and a zero gzip timestamp, so the
    same files give the same bytes (and the master's content address is stable).
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT,
                      dereference=True) as tar:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS
                             and not os.path.islink(os.path.join(root, d)))
            rel_root = os.path.relpath(root, folder)
            for d in dirs:
                _add(tar, os.path.join(root, d), os.path.normpath(os.path.join(rel_root, d)))
            for name in sorted(files):
                path = os.path.join(root, name)
                if name.endswith((".pyc", ".pyo")) or not os.path.isfile(path):
                    continue  # broken links, sockets, fifos
                _add(tar, path, os.path.normpath(os.path.join(rel_root, name)))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _add(tar: tarfile.TarFile, path: str, arcname: str) -> None:
    info = tar.gettarinfo(path, arcname=arcname)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if info.isfile():
        with open(path, "rb") as f:
            tar.addfile(info, f)
    else:
        tar.addfile(info)
