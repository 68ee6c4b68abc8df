"""Sharing a trained SimpleDDPMPipeline on the Hugging Face Hub: token, repo check, background uploads, final push.

`make_hub_layout` writes the layout of a pushed repo; why it is this layout (diffusers' loader, `DDPMScheduler` in
model_index.json, the code files for `trust_remote_code`) is in docs/architecture.md ("The Hub layout"). The token
is only ever handed to `HfApi`; it is never logged, and a folder that contains it is not uploaded.
"""

import filecmp
import json
import os
import shutil
import tempfile
import uuid
import warnings
from concurrent.futures import Future
from pathlib import Path

import diffusers
from diffusers import DDPMScheduler, DiffusionPipeline
from diffusers.utils.dynamic_modules_utils import get_relative_import_files
from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from .model_card import METRICS_NAME, has_card_metrics, pipeline_model_card, write_model_card

PIPELINE_CODE_FILE = "pipeline.py"  # the file diffusers fetches for custom_pipeline=<repo id>
SCHEDULER_ENTRY = ["diffusers", "DDPMScheduler"]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
STAGING_PREFIX = ".hub-upload-"  # snapshots of BackgroundUploader, never part of a pushed folder
DEFAULT_IGNORE_PATTERNS = ["checkpoint-*"]  # training state, uploaded during training if at all


class HubAccessError(RuntimeError):
    """The Hub cannot be used with this token and repo; the message is one line and never contains the token."""


def resolve_token(token: str | None) -> str | None:
    """The Hub token to use: `token` if given, else the `HF_TOKEN` environment variable, else the stored login."""
    return token or os.environ.get("HF_TOKEN") or get_token()


def _require_token(token: str | None) -> str:
    token = resolve_token(token)
    if not token:
        raise HubAccessError(
            "No Hugging Face token found: pass one explicitly, set HF_TOKEN, or log in with `hf auth login`."
        )
    return token


def error_summary(error: Exception) -> str:
    """A one-line description of a failed Hub call: the HTTP status, or the exception's type and first line."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, HfHubHTTPError) and status is not None:
        return f"HTTP {status}"
    first_line = next(iter(str(error).splitlines()), "")
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__


def prepare_repo(repo_id: str, token: str | None, private: bool = False) -> str:
    """Create `repo_id` if needed and prove that the token can write to it; return the full repo id.

    Meant to run before training, so that a missing, invalid or read-only token fails in seconds. Three calls:
    `whoami` (the token is valid), `create_repo(exist_ok=True)` (the repo exists), then creating and deleting a
    uniquely named branch. The last one is the write check: `create_repo(exist_ok=True)` alone succeeds with a
    read-only token when the repo already exists, whereas a branch is a write to the repo's refs that the Hub
    authorizes like the commits of the later uploads (fine-grained tokens included), and leaves nothing behind.

    Args:
        repo_id (`str`): "USER/NAME" or "ORG/NAME" ("NAME" alone means the token's user).
        token (`str`, *optional*): see `resolve_token`.
        private (`bool`, defaults to False): visibility of a newly created repo; an existing repo keeps its own.

    Raises:
        `HubAccessError`: with a one-line reason, at the first check that fails.
    """
    api = HfApi(token=_require_token(token))
    try:
        user = api.whoami()["name"]
    except HfHubHTTPError as error:
        raise HubAccessError(
            f"The Hugging Face token was rejected ({error_summary(error)}): it is invalid or expired."
        ) from None
    except Exception as error:
        raise HubAccessError(f"Cannot reach the Hugging Face Hub ({error_summary(error)}).") from None
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    except Exception as error:
        raise HubAccessError(f"Cannot create or find the repo {repo_id} as {user} ({error_summary(error)}).") from None
    branch = f"simple-ddpm-write-check-{uuid.uuid4().hex[:12]}"
    try:
        api.create_branch(repo_id, branch=branch)
    except Exception as error:
        raise HubAccessError(
            f"The token of {user} cannot write to {repo_id} ({error_summary(error)} when creating a test branch); "
            "use a token with write access to this repo."
        ) from None
    try:
        api.delete_branch(repo_id, branch=branch)
    except Exception as error:
        warnings.warn(
            f"Could not delete the test branch {branch} of {repo_id} ({error_summary(error)}); delete it by hand.",
            stacklevel=2,
        )
    return repo_id


def _check_token_absent(path: Path, token: str) -> None:
    """Refuse to upload `path` (a file or folder) if any file in it, weights aside, contains the token."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    needle = token.encode()
    for file in files:
        if file.suffix not in WEIGHT_SUFFIXES and needle in file.read_bytes():
            raise ValueError(f"{file} contains the Hugging Face token; refusing to upload it.")


def _pipeline_code_files() -> dict[str, Path]:
    """The source files a diffusers-only user needs, by their name in the repo.

    The relative imports are found with the function diffusers itself uses when it loads the code, so the repo
    holds exactly the files the loader will ask for.
    """
    # Copied flat beside pipeline.py, as diffusers resolves `from .x import` among siblings: the pipeline's relative
    # imports, today scheduling_simple_ddpm, ddpm_chain, analytic_dpm, variational_bound, model_output, elbo,
    # training_losses, timestep_samplers, guidance, float32_attention and hardware; pipeline_simple_ddpm.py imports
    # each of them itself, as diffusers copies only pipeline.py's own imports from a local folder.
    pipeline_file = Path(__file__).with_name("pipeline_simple_ddpm.py")  # a sibling, read but not imported
    files = {PIPELINE_CODE_FILE: pipeline_file}
    for dependency in get_relative_import_files(str(pipeline_file)):
        files[Path(dependency).name] = Path(dependency)
    return files


def make_hub_layout(folder: str | Path, include_code: bool = True) -> None:
    """Rewrite a saved SimpleDDPMPipeline folder in place into the layout described above.

    Idempotent; the weights are not touched, and the configs only lose the "_name_or_path" that diffusers writes
    when a loaded pipeline is saved again (a local path).

    Args:
        folder (`str` or `Path`): the saved pipeline.
        include_code (`bool`, defaults to True): also copy the pipeline's source files for
            `trust_remote_code` users.

    Raises:
        `ValueError`: if `folder` is not a SimpleDDPMPipeline folder, or its scheduler is neither a
            SimpleDDPMScheduler whose config diffusers' DDPMScheduler reads nor a diffusers scheduler that reads its
            own config.
    """
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ValueError(f"{folder} is not a pipeline folder: it has no model_index.json.")
    index = json.loads(index_path.read_text())
    if index.get("_class_name") != "SimpleDDPMPipeline":
        raise ValueError(f"{folder} holds a {index.get('_class_name')!r}, not a 'SimpleDDPMPipeline'.")
    for component in ("unet", "scheduler"):
        if not (folder / component).is_dir():
            raise ValueError(f"{folder} is not a complete pipeline folder: it has no {component}/ subfolder.")
    entry = index.get("scheduler")
    library, scheduler_class = entry if isinstance(entry, list) and len(entry) == 2 else (None, entry)
    if scheduler_class in ("SimpleDDPMScheduler", SCHEDULER_ENTRY[1]):
        reader = DDPMScheduler
    elif library == "diffusers" and isinstance(getattr(diffusers, str(scheduler_class), None), type):
        # Another diffusers scheduler put in by the user (pipe.scheduler = DDIMScheduler.from_config(...)): the
        # entry already loads by repo id, and SimpleDDPMPipeline samples with it.
        reader = getattr(diffusers, scheduler_class)
    else:
        raise ValueError(
            f"{folder}'s scheduler is {library}.{scheduler_class}; a shared SimpleDDPMPipeline needs a "
            "SimpleDDPMScheduler or a scheduler of diffusers (DDIMScheduler, DPMSolverMultistepScheduler, ...), which "
            "load by repo id."
        )
    try:
        reader.from_pretrained(folder / "scheduler")
    except Exception as error:
        raise ValueError(
            f"diffusers' {reader.__name__} cannot read {folder / 'scheduler'} ({error_summary(error)})."
        ) from None

    if reader is DDPMScheduler and index["scheduler"] != SCHEDULER_ENTRY:
        index["scheduler"] = SCHEDULER_ENTRY
        _write_config(index_path, index)
    # A pipeline loaded from disk and saved again records the local path it came from: not for a public repo.
    for config_path in [index_path, *folder.glob("*/*.json")]:
        config = json.loads(config_path.read_text())
        if config.pop("_name_or_path", None) is not None:
            _write_config(config_path, config)
    if include_code:
        for name, source in _pipeline_code_files().items():
            shutil.copyfile(source, folder / name)


def _write_config(path: Path, config: dict) -> None:
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")  # as diffusers writes it


def prepare_pipeline_folder(folder: str | Path, token: str | None, include_code: bool = True) -> None:
    """Everything `push_pipeline_folder` does before it uploads, without the network: check a folder early.

    Rewrites the folder with `make_hub_layout`, requires the model card README.md, and refuses a folder in which a
    file (weights aside) contains the token.

    Raises:
        `ValueError`: if the folder is not a pipeline folder, has no README.md, or a file contains the token.
        `HubAccessError`: if no token is found.
    """
    token = _require_token(token)
    folder = Path(folder)
    make_hub_layout(folder, include_code=include_code)
    if not (folder / "README.md").is_file():
        raise ValueError(f"{folder} has no model card (README.md); write the card before pushing.")
    _check_token_absent(folder, token)


def push_pipeline_folder(
    folder: str | Path,
    repo_id: str,
    token: str | None,
    commit_message: str = "Upload SimpleDDPMPipeline",
    include_code: bool = True,
    ignore_patterns: list[str] | None = None,
) -> str:
    """Upload a trained pipeline folder (pipeline, model card README.md, metrics, samples) in one commit.

    The folder is first passed through `prepare_pipeline_folder`, so what is uploaded is the folder as it then is on
    disk. Call `prepare_repo` first; this function neither creates the repo nor checks access.

    Args:
        folder (`str` or `Path`): saved by `SimpleDDPMPipeline.save_pretrained`, with the card as README.md.
        repo_id (`str`): the full repo id returned by `prepare_repo`.
        token (`str`, *optional*): see `resolve_token`.
        commit_message (`str`): the commit's title.
        include_code (`bool`, defaults to True): see `make_hub_layout`; False also leaves out the source files
            that `save_pretrained` put in the folder.
        ignore_patterns (`list[str]`, *optional*): glob patterns of files not to upload; default
            `DEFAULT_IGNORE_PATTERNS`, the checkpoint-* folders. `[]` uploads everything.

    Returns:
        `str`: the URL of the commit.

    Raises:
        `ValueError`, `HubAccessError`: see `prepare_pipeline_folder`.
    """
    prepare_pipeline_folder(folder, token, include_code=include_code)
    commit = HfApi(token=resolve_token(token)).upload_folder(
        repo_id=repo_id,
        folder_path=Path(folder),
        commit_message=commit_message,
        ignore_patterns=[
            *(DEFAULT_IGNORE_PATTERNS if ignore_patterns is None else ignore_patterns),
            f"*{STAGING_PREFIX}*",
            *([] if include_code else _pipeline_code_files()),
        ],
    )
    return commit.commit_url


def _same_file(saved: Path, original: Path) -> bool:
    """Byte for byte, but configs without their "_" keys (diffusers adds "_name_or_path" when it saves again)."""
    if not original.is_file():
        return False
    if saved.suffix != ".json":
        return filecmp.cmp(saved, original, shallow=False)
    settings = [
        {k: v for k, v in json.loads(p.read_text()).items() if not k.startswith("_")} for p in (saved, original)
    ]
    return settings[0] == settings[1]


def _measured_metrics(source: Path, staged: Path) -> dict | None:
    """The training metrics of the folder `source` if the pipeline saved in `staged` is the one measured there
    (the same weights and configs in unet/ and scheduler/), else None."""
    if not (source / METRICS_NAME).is_file():
        return None
    metrics = json.loads((source / METRICS_NAME).read_text())
    saved = [p for component in ("unet", "scheduler") for p in (staged / component).rglob("*") if p.is_file()]
    same = all(_same_file(path, source / path.relative_to(staged)) for path in saved)
    return metrics if same and has_card_metrics(metrics) else None


def push_pipeline(
    pipe: DiffusionPipeline,
    repo_id: str,
    commit_message: str = "Upload SimpleDDPMPipeline",
    private: bool | None = None,
    token: str | None = None,
    **save_kwargs,
) -> str:
    """`SimpleDDPMPipeline.push_to_hub`: check write access, save to a temporary folder, add the card, upload.

    The card is filled from training/train.py's (or distill.py's) metrics.json, which is uploaded too with the
    sample grid, when the pipeline was loaded from a trained folder and saves to the same weights and scheduler
    files; otherwise it is `pipeline_model_card`, which claims no measurement. Returns the URL of the commit.
    """
    repo_id = prepare_repo(repo_id, token, private=bool(private))
    with tempfile.TemporaryDirectory() as staged:
        staged = Path(staged)
        pipe.save_pretrained(staged, **save_kwargs)
        source = Path(pipe.name_or_path or staged)
        metrics = _measured_metrics(source, staged) if source.is_dir() and source != staged else None
        if metrics is not None:
            for name in (METRICS_NAME, metrics["sample_grid"]):
                if (source / name).is_file():
                    (staged / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source / name, staged / name)
            write_model_card(staged, repo_id=repo_id)
        else:
            pipeline_model_card(pipe, repo_id).save(staged / "README.md")
        return push_pipeline_folder(staged, repo_id, token, commit_message=commit_message)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def _snapshot(path: Path) -> Path:
    """Hard links to `path` (a file or a folder) in a new hidden folder beside it: instant, and immune to the
    original being deleted or replaced afterwards. Returns the folder, which holds one entry named like `path`."""
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=path.parent))
    if path.is_file():
        _link_or_copy(str(path), str(staging / path.name))
    else:
        shutil.copytree(path, staging / path.name, copy_function=_link_or_copy)
    return staging


class BackgroundUploader:
    """Uploads files and folders to one Hub repo in the background while training goes on.

    `upload` takes a snapshot of the path (hard links, see `_snapshot`) and returns at once, so training may delete
    or overwrite the path right away (e.g. prune old checkpoints). The uploads then run one after another, in the
    order they were asked for, on `HfApi`'s worker thread (`run_as_future`), so commits never race each other. A
    failed upload does not stop training: it is reported as a warning at the next `upload` or at `wait`.

    Args:
        repo_id (`str`): the full repo id returned by `prepare_repo`.
        token (`str`, *optional*): see `resolve_token`.
    """

    def __init__(self, repo_id: str, token: str | None):
        self.repo_id = repo_id
        self._token = _require_token(token)
        self._api = HfApi(token=self._token)
        self._pending: list[tuple[str, Future]] = []

    def upload(
        self,
        path: str | Path,
        path_in_repo: str | None = None,
        commit_message: str | None = None,
        ignore_patterns: list[str] | None = None,
    ) -> None:
        """Queue the upload of a file or folder, as it is now, to `path_in_repo`.

        Args:
            path (`str` or `Path`): a checkpoint folder, a sample grid, ...
            path_in_repo (`str`, *optional*): where it goes in the repo, e.g. "checkpoints/step_5000"; default: the
                file's name, or the repo's root for a folder.
            commit_message (`str`, *optional*): defaults to "Upload <path_in_repo>".
            ignore_patterns (`list[str]`, *optional*): for a folder, glob patterns of files to leave out.
        """
        self._report(wait=False)
        path = Path(path)
        if path_in_repo is None:
            path_in_repo = path.name if path.is_file() else ""
        description = f"{path} -> {self.repo_id}/{path_in_repo}"
        try:
            staging = _snapshot(path)
        except OSError as error:
            warnings.warn(f"Upload of {description} skipped ({error_summary(error)}); training goes on.", stacklevel=2)
            return
        commit_message = commit_message or f"Upload {path_in_repo or path.name}"
        future = self._api.run_as_future(
            self._upload, staging, staging / path.name, path_in_repo, commit_message, ignore_patterns
        )
        self._pending.append((description, future))

    def _upload(
        self, staging: Path, path: Path, path_in_repo: str, commit_message: str, ignore_patterns: list[str] | None
    ):
        try:
            _check_token_absent(path, self._token)  # here, so that reading the files does not block training
            if path.is_file():
                return self._api.upload_file(
                    path_or_fileobj=path,
                    path_in_repo=path_in_repo,
                    repo_id=self.repo_id,
                    commit_message=commit_message,
                )
            return self._api.upload_folder(
                repo_id=self.repo_id,
                folder_path=path,
                path_in_repo=path_in_repo or None,
                commit_message=commit_message,
                ignore_patterns=ignore_patterns,
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _report(self, wait: bool) -> int:
        still_running, failures = [], 0
        for description, future in self._pending:
            if not wait and not future.done():
                still_running.append((description, future))
                continue
            error = future.exception()
            if error is not None:
                failures += 1
                warnings.warn(
                    f"Upload of {description} failed ({error_summary(error)}); training goes on.", stacklevel=3
                )
        self._pending = still_running
        return failures

    def wait(self) -> int:
        """Block until every queued upload has finished; warn about each failure and return how many failed."""
        return self._report(wait=True)
