"""Sharing on the Hub, offline: a recording stand-in for HfApi (tests/fake_hub.py) and a hand-built Hub cache."""

import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline
from fake_hub import READ_TOKEN, WRITE_TOKEN, FakeHub, folder_files, install_fake_hub
from huggingface_hub import ModelCard
from tiny_pipeline import save_trained_folder, tiny_pipeline, tiny_unet

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler, hub


def samples(pipe: SimpleDDPMPipeline) -> torch.Tensor:
    return pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=10, output_type="pt")[0]


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHub:
    return install_fake_hub(monkeypatch)


def push(fake: FakeHub, pipe: SimpleDDPMPipeline, folder, repo_id: str = "alice/ddpm") -> str:
    save_trained_folder(pipe, folder)
    repo_id = hub.prepare_repo(repo_id, WRITE_TOKEN)
    hub.push_pipeline_folder(folder, repo_id, WRITE_TOKEN)
    return repo_id


def test_resolve_token_prefers_argument_then_HF_TOKEN_then_stored_login(monkeypatch):
    monkeypatch.setattr(hub, "get_token", lambda: "stored")
    monkeypatch.setenv("HF_TOKEN", "from-env")
    assert hub.resolve_token("given") == "given"
    assert hub.resolve_token(None) == "from-env"
    monkeypatch.delenv("HF_TOKEN")
    assert hub.resolve_token(None) == "stored"


def test_prepare_repo_creates_the_repo_and_proves_write_access_leaving_no_branch(fake_hub):
    repo_id = hub.prepare_repo("ddpm", WRITE_TOKEN, private=True)

    assert repo_id == "alice/ddpm"
    assert [method for method, _ in fake_hub.calls] == ["whoami", "create_repo", "create_branch", "delete_branch"]
    assert fake_hub.repos["alice/ddpm"]["private"] is True
    assert set(fake_hub.repos["alice/ddpm"]["branches"]) == {"main"}


def test_missing_token_fails_before_any_hub_call(fake_hub):
    with pytest.raises(hub.HubAccessError, match="No Hugging Face token found") as error:
        hub.prepare_repo("alice/ddpm", None)
    assert fake_hub.calls == []
    assert "\n" not in str(error.value)


def test_invalid_token_fails_in_one_line_that_does_not_show_the_token(fake_hub):
    bad_token = "hf_NotARealToken"
    with pytest.raises(hub.HubAccessError, match="rejected .HTTP 401.") as error:
        hub.prepare_repo("alice/ddpm", bad_token)
    assert [method for method, _ in fake_hub.calls] == ["whoami"]  # the first call fails it, with no retry
    assert bad_token not in str(error.value) and "\n" not in str(error.value)
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_unreachable_hub_fails_in_one_line_with_the_real_client(monkeypatch):
    monkeypatch.setattr(hub, "get_token", lambda: None)
    with pytest.raises(hub.HubAccessError, match="Cannot reach the Hugging Face Hub .OfflineModeIsEnabled") as error:
        hub.prepare_repo("alice/ddpm", WRITE_TOKEN)  # HfApi itself; tests run with HF_HUB_OFFLINE=1
    assert WRITE_TOKEN not in str(error.value) and "\n" not in str(error.value)


def test_read_only_token_fails_the_write_check_even_when_the_repo_exists(fake_hub):
    hub.prepare_repo("alice/ddpm", WRITE_TOKEN)
    fake_hub.calls.clear()

    with pytest.raises(hub.HubAccessError, match="cannot write to alice/ddpm .HTTP 403") as error:
        hub.prepare_repo("alice/ddpm", READ_TOKEN)

    # create_repo(exist_ok=True) let the read-only token through; only the write check caught it.
    assert [method for method, _ in fake_hub.calls] == ["whoami", "create_repo", "create_branch"]
    assert READ_TOKEN not in str(error.value)
    assert len(fake_hub.repos["alice/ddpm"]["order"]) == 1 and set(fake_hub.repos["alice/ddpm"]["branches"]) == {
        "main"
    }


def test_read_only_token_cannot_create_a_new_repo(fake_hub):
    with pytest.raises(hub.HubAccessError, match="Cannot create or find the repo alice/ddpm as alice .HTTP 403"):
        hub.prepare_repo("alice/ddpm", READ_TOKEN)
    assert fake_hub.repos == {}


def test_pushed_folder_is_what_loads_by_repo_id_from_the_offline_cache(fake_hub, tmp_path):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    pipe = tiny_pipeline(beta_schedule="cosine", variance_type="fixed_large")
    repo_id = push(fake_hub, pipe, tmp_path / "trained")
    fake_hub.export_to_cache(repo_id, tmp_path / "cache")

    local_files = folder_files(tmp_path / "trained")
    uploaded = {path: data for path, data in fake_hub.files(repo_id).items() if path != ".gitattributes"}
    assert uploaded == local_files  # file for file

    loaded = SimpleDDPMPipeline.from_pretrained(repo_id, cache_dir=tmp_path / "cache")

    assert type(loaded) is SimpleDDPMPipeline and type(loaded.scheduler) is SimpleDDPMScheduler
    public = {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}
    assert {k: v for k, v in loaded.scheduler.config.items() if not k.startswith("_")} == public
    torch.testing.assert_close(loaded.scheduler.alphas_cumprod, pipe.scheduler.alphas_cumprod, rtol=0, atol=0)
    torch.testing.assert_close(samples(loaded), samples(pipe), rtol=0, atol=0)
    card = ModelCard.load(
        tmp_path
        / "cache"
        / "models--alice--ddpm"
        / "snapshots"
        / fake_hub.repos[repo_id]["branches"]["main"]
        / "README.md"
    )
    assert "simple-ddpm" in card.data.tags


def test_learned_variance_pipeline_pushed_loads_by_repo_id_samples_alike_and_its_card_says_so(fake_hub, tmp_path):
    pipe = tiny_pipeline(variance_type="learned_range")
    repo_id = push(fake_hub, pipe, tmp_path / "trained", repo_id="alice/iddpm")
    fake_hub.export_to_cache(repo_id, tmp_path / "cache")

    loaded = SimpleDDPMPipeline.from_pretrained(repo_id, cache_dir=tmp_path / "cache")
    assert loaded.scheduler.config.variance_type == "learned_range" and loaded.unet.config.out_channels == 6
    torch.testing.assert_close(samples(loaded), samples(pipe), rtol=0, atol=0)
    assert "| reverse variance | learned (`learned_range`" in fake_hub.files(repo_id)["README.md"].decode()
    stock = DDPMPipeline.from_pretrained(repo_id, cache_dir=tmp_path / "cache")
    assert type(stock.scheduler) is DDPMScheduler and stock.scheduler.config.variance_type == "learned_range"


def test_diffusers_own_save_layout_does_not_load_by_repo_id_which_is_why_save_pretrained_rewrites_it(
    fake_hub, tmp_path
):
    # The cache carries the repo's file listing, so diffusers runs the same checks offline as online.
    DiffusionPipeline.save_pretrained(tiny_pipeline(), tmp_path / "plain")
    fake_hub.publish("alice/plain", tmp_path / "plain")
    fake_hub.export_to_cache("alice/plain", tmp_path / "cache")

    with pytest.raises(ValueError, match="simple_ddpm.scheduling_simple_ddpm.py as defined in `model_index.json`"):
        SimpleDDPMPipeline.from_pretrained("alice/plain", cache_dir=tmp_path / "cache")
    assert SimpleDDPMPipeline.from_pretrained(tmp_path / "plain") is not None  # a local folder loads either way


def test_a_folder_from_save_pretrained_uploaded_as_it_is_loads_by_repo_id(fake_hub, tmp_path):
    pipe = tiny_pipeline(beta_schedule="cosine")
    pipe.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "model_index.json").read_text())["scheduler"] == hub.SCHEDULER_ENTRY
    fake_hub.publish("alice/saved", tmp_path / "saved")  # e.g. with `hf upload`, without our code
    fake_hub.export_to_cache("alice/saved", tmp_path / "cache")

    loaded = SimpleDDPMPipeline.from_pretrained("alice/saved", cache_dir=tmp_path / "cache")
    assert type(loaded.scheduler) is SimpleDDPMScheduler
    torch.testing.assert_close(samples(loaded), samples(pipe), rtol=0, atol=0)


def test_revision_selects_the_pushed_commit(fake_hub, tmp_path):
    first, second = tiny_pipeline(seed=1), tiny_pipeline(seed=2)
    repo_id = push(fake_hub, first, tmp_path / "first")
    first_sha = fake_hub.repos[repo_id]["branches"]["main"]
    push(fake_hub, second, tmp_path / "second")
    hub.HfApi(WRITE_TOKEN).create_branch(repo_id, branch="v1", revision=first_sha)
    fake_hub.export_to_cache(repo_id, tmp_path / "cache")

    def weight(revision):
        pipe = SimpleDDPMPipeline.from_pretrained(repo_id, revision=revision, cache_dir=tmp_path / "cache")
        return pipe.unet.conv_in.weight

    torch.testing.assert_close(weight(None), second.unet.conv_in.weight, rtol=0, atol=0)
    torch.testing.assert_close(weight("v1"), first.unet.conv_in.weight, rtol=0, atol=0)
    torch.testing.assert_close(weight(first_sha), first.unet.conv_in.weight, rtol=0, atol=0)


def test_variant_and_torch_dtype_load_as_diffusers_does(fake_hub, tmp_path):
    pipe = tiny_pipeline()
    folder = tmp_path / "trained"
    save_trained_folder(pipe, folder)
    half = tiny_pipeline()
    half.unet.to(torch.float16)
    half.save_pretrained(folder, variant="fp16")
    repo_id = hub.prepare_repo("alice/ddpm", WRITE_TOKEN)
    hub.push_pipeline_folder(folder, repo_id, WRITE_TOKEN)
    fake_hub.export_to_cache(repo_id, tmp_path / "cache")

    loaded = SimpleDDPMPipeline.from_pretrained(
        repo_id, variant="fp16", torch_dtype=torch.float16, cache_dir=tmp_path / "cache"
    )
    assert loaded.unet.dtype == torch.float16
    torch.testing.assert_close(loaded.unet.conv_in.weight, pipe.unet.conv_in.weight.half(), rtol=0, atol=0)
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in fake_hub.files(repo_id)

    full = SimpleDDPMPipeline.from_pretrained(repo_id, cache_dir=tmp_path / "cache")
    assert full.unet.dtype == torch.float32


def test_no_uploaded_file_contains_the_token(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)  # the way most users pass it
    folder = tmp_path / "trained"
    repo_id = hub.prepare_repo("alice/ddpm", None)
    uploader = hub.BackgroundUploader(repo_id, None)
    checkpoint = tmp_path / "checkpoint-5"
    tiny_pipeline().save_pretrained(checkpoint)
    uploader.upload(checkpoint, path_in_repo="checkpoints/step_5")
    save_trained_folder(tiny_pipeline(), folder)
    uploader.upload(folder / "README.md", path_in_repo="samples/README.md")
    assert uploader.wait() == 0
    hub.push_pipeline_folder(folder, repo_id, None)

    uploaded = fake_hub.all_uploaded_bytes()
    assert {"checkpoints/step_5/model_index.json", "samples/README.md", "model_index.json", "README.md"} <= {
        path for path, _ in uploaded
    }
    assert not [path for path, data in uploaded if WRITE_TOKEN.encode() in data]


def test_push_refuses_a_folder_that_contains_the_token(fake_hub, tmp_path):
    folder = tmp_path / "trained"
    save_trained_folder(tiny_pipeline(), folder)
    (folder / "logs").mkdir()
    (folder / "logs" / "args.json").write_text(json.dumps({"hub_token": WRITE_TOKEN}))
    repo_id = hub.prepare_repo("alice/ddpm", WRITE_TOKEN)

    with pytest.raises(ValueError, match=r"args.json contains the Hugging Face token") as error:
        hub.push_pipeline_folder(folder, repo_id, WRITE_TOKEN)
    assert WRITE_TOKEN not in str(error.value)
    assert len(fake_hub.repos[repo_id]["order"]) == 1  # nothing committed


def test_push_refuses_a_folder_without_a_model_card(fake_hub, tmp_path):
    tiny_pipeline().save_pretrained(tmp_path / "trained")
    with pytest.raises(ValueError, match="has no model card"):
        hub.push_pipeline_folder(tmp_path / "trained", "alice/ddpm", WRITE_TOKEN)
    assert fake_hub.calls == []


def test_background_uploads_return_at_once_and_commit_in_order(fake_hub, tmp_path):
    repo_id = hub.prepare_repo("alice/ddpm", WRITE_TOKEN)
    uploader = hub.BackgroundUploader(repo_id, WRITE_TOKEN)
    for step in (1, 2, 3):
        (tmp_path / f"grid_{step}.png").write_bytes(b"png %d" % step)

    fake_hub.commit_gate.clear()  # the Hub is stuck: no commit can finish until the gate opens
    for step in (1, 2, 3):  # so returning at all shows that upload() does not wait for its commit
        uploader.upload(tmp_path / f"grid_{step}.png", path_in_repo=f"samples/grid_{step}.png")
    assert len(fake_hub.repos[repo_id]["order"]) == 1

    fake_hub.commit_gate.set()
    assert uploader.wait() == 0
    commits = [fake_hub.repos[repo_id]["commits"][sha] for sha in fake_hub.repos[repo_id]["order"][1:]]
    assert [sorted(p for p in files if p.startswith("samples/")) for files in commits] == [
        ["samples/grid_1.png"],
        ["samples/grid_1.png", "samples/grid_2.png"],
        ["samples/grid_1.png", "samples/grid_2.png", "samples/grid_3.png"],
    ]


def test_background_upload_is_a_snapshot_so_training_may_delete_the_path_at_once(fake_hub, tmp_path):
    repo_id = hub.prepare_repo("alice/ddpm", WRITE_TOKEN)
    uploader = hub.BackgroundUploader(repo_id, WRITE_TOKEN)
    checkpoint = tmp_path / "checkpoint-5"
    tiny_pipeline().save_pretrained(checkpoint)
    saved = folder_files(checkpoint)

    fake_hub.commit_gate.clear()
    uploader.upload(checkpoint, path_in_repo="checkpoints/step_5")
    shutil.rmtree(checkpoint)  # pruned by training before the upload ran
    fake_hub.commit_gate.set()

    assert uploader.wait() == 0
    uploaded = {path.removeprefix("checkpoints/step_5/"): data for path, data in fake_hub.files(repo_id).items()}
    assert {path: uploaded[path] for path in saved} == saved
    assert list(tmp_path.iterdir()) == []  # the snapshot is gone too


def test_final_push_leaves_out_snapshots_of_interrupted_background_uploads(fake_hub, tmp_path):
    folder = tmp_path / "trained"
    save_trained_folder(tiny_pipeline(), folder)
    (folder / "samples" / ".hub-upload-k3j2" / "grid.png").parent.mkdir(parents=True)
    (folder / "samples" / ".hub-upload-k3j2" / "grid.png").write_bytes(b"stale")
    repo_id = hub.prepare_repo("alice/ddpm", WRITE_TOKEN)

    hub.push_pipeline_folder(folder, repo_id, WRITE_TOKEN)
    assert "model_index.json" in fake_hub.files(repo_id)
    assert not [path for path in fake_hub.files(repo_id) if ".hub-upload-" in path]


def test_failed_background_upload_is_a_warning_and_later_uploads_go_on(fake_hub, tmp_path):
    repo_id = hub.prepare_repo("alice/ddpm", WRITE_TOKEN)
    uploader = hub.BackgroundUploader(repo_id, WRITE_TOKEN)
    fake_hub.fail_paths = {"checkpoints/step_1"}
    for step in (1, 2):
        tiny_pipeline().save_pretrained(tmp_path / f"checkpoint-{step}")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        uploader.upload(tmp_path / "checkpoint-1", path_in_repo="checkpoints/step_1")
        uploader.upload(tmp_path / "checkpoint-2", path_in_repo="checkpoints/step_2")
        failures = uploader.wait()

    assert failures == 1
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "checkpoint-1" in messages[0] and "HTTP 500" in messages[0]
    assert WRITE_TOKEN not in messages[0]
    assert "checkpoints/step_2/model_index.json" in fake_hub.files(repo_id)
    assert not any(path.startswith("checkpoints/step_1/") for path in fake_hub.files(repo_id))


@pytest.mark.parametrize(
    "config",
    [
        {"beta_schedule": "cosine", "variance_type": "fixed_large"},
        {"prediction_type": "v_prediction", "timestep_spacing": "trailing", "clip_sample": False},
        {"trained_betas": [0.05 * (i + 1) for i in range(10)], "prediction_type": "sample"},
    ],
)
def test_hub_layout_round_trips_the_scheduler_config_through_DDPMScheduler(tmp_path, config):
    pipe = tiny_pipeline(**config)
    pipe.save_pretrained(tmp_path)
    hub.make_hub_layout(tmp_path)

    assert json.loads((tmp_path / "model_index.json").read_text())["scheduler"] == ["diffusers", "DDPMScheduler"]
    loaded = SimpleDDPMPipeline.from_pretrained(tmp_path)
    assert type(loaded.scheduler) is SimpleDDPMScheduler
    public = {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}
    assert {k: v for k, v in loaded.scheduler.config.items() if not k.startswith("_")} == public
    torch.testing.assert_close(loaded.scheduler.alphas_cumprod, pipe.scheduler.alphas_cumprod, rtol=0, atol=0)


def test_pushed_repo_loads_as_a_stock_DDPMPipeline_for_users_without_the_package(fake_hub, tmp_path):
    pipe = tiny_pipeline()
    repo_id = push(fake_hub, pipe, tmp_path / "trained")
    fake_hub.export_to_cache(repo_id, tmp_path / "cache")

    for source in (tmp_path / "trained", repo_id):
        stock = DDPMPipeline.from_pretrained(source, cache_dir=tmp_path / "cache")
        assert type(stock.scheduler) is DDPMScheduler
        torch.testing.assert_close(
            stock.scheduler.alphas_cumprod.double(), pipe.scheduler.alphas_cumprod, rtol=1e-6, atol=0
        )
        torch.testing.assert_close(stock.unet.conv_in.weight, pipe.unet.conv_in.weight, rtol=0, atol=0)


def test_stock_DDPMPipeline_checkpoint_loads_with_our_scheduler_locally_and_by_repo_id(fake_hub, tmp_path):
    ddpm_scheduler = DDPMScheduler(num_train_timesteps=10, beta_end=0.2, variance_type="fixed_large")
    DDPMPipeline(unet=tiny_unet(), scheduler=ddpm_scheduler).save_pretrained(tmp_path / "stock")
    index = json.loads((tmp_path / "stock" / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline" and index["scheduler"] == ["diffusers", "DDPMScheduler"]
    fake_hub.publish("google/tiny-ddpm", tmp_path / "stock")
    fake_hub.export_to_cache("google/tiny-ddpm", tmp_path / "cache")

    for source in (tmp_path / "stock", "google/tiny-ddpm"):
        pipe = SimpleDDPMPipeline.from_pretrained(source, cache_dir=tmp_path / "cache")
        assert type(pipe.scheduler) is SimpleDDPMScheduler
        assert pipe.scheduler.config.variance_type == "fixed_large"
        torch.testing.assert_close(
            pipe.scheduler.alphas_cumprod.float(), ddpm_scheduler.alphas_cumprod, rtol=1e-6, atol=0
        )
        torch.testing.assert_close(pipe.unet.conv_in.weight, tiny_unet().conv_in.weight, rtol=0, atol=0)


DIFFUSERS_ONLY_USER = """
import json, sys
sys.modules["simple_ddpm"] = None  # this user has only diffusers
import torch
from diffusers import DiffusionPipeline
folder = sys.argv[1]
pipe = DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder, trust_remote_code=True)
images = torch.linspace(-1, 1, 2 * 3 * 8 * 8, dtype=torch.float64).view(2, 3, 8, 8)
images = ((images + 1) * 127.5).round() / 127.5 - 1
bpd = pipe.elbo(images, generator=torch.Generator().manual_seed(0)).bits_per_dim
print(json.dumps({"class": type(pipe).__module__ + "." + type(pipe).__name__,
                  "scheduler": type(pipe.scheduler).__name__, "bpd": bpd.tolist()}))
"""


def test_diffusers_only_user_runs_our_pipeline_from_the_pushed_code_with_trust_remote_code(fake_hub, tmp_path):
    pipe = tiny_pipeline()
    repo_id = push(fake_hub, pipe, tmp_path / "trained")
    fake_hub.export_to_cache(repo_id, tmp_path / "cache")
    snapshot = tmp_path / "cache" / "models--alice--ddpm" / "snapshots" / fake_hub.repos[repo_id]["branches"]["main"]

    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", DIFFUSERS_ONLY_USER, str(snapshot)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])

    assert loaded["class"].startswith("diffusers_modules.") and loaded["class"].endswith(".SimpleDDPMPipeline")
    assert loaded["scheduler"] == "SimpleDDPMScheduler"
    images = torch.linspace(-1, 1, 2 * 3 * 8 * 8, dtype=torch.float64).view(2, 3, 8, 8)
    images = ((images + 1) * 127.5).round() / 127.5 - 1
    expected = pipe.elbo(images, generator=torch.Generator().manual_seed(0)).bits_per_dim
    assert loaded["bpd"] == expected.tolist()


def test_pipeline_code_files_are_the_installed_sources_and_their_relative_imports(tmp_path):
    tiny_pipeline().save_pretrained(tmp_path)
    hub.make_hub_layout(tmp_path)
    package = os.path.dirname(hub.__file__)
    with open(os.path.join(package, "pipeline_simple_ddpm.py"), "rb") as source:
        assert (tmp_path / "pipeline.py").read_bytes() == source.read()
    with open(os.path.join(package, "scheduling_simple_ddpm.py"), "rb") as source:
        assert (tmp_path / "scheduling_simple_ddpm.py").read_bytes() == source.read()


def test_make_hub_layout_rejects_folders_that_are_not_simple_ddpm_pipelines(tmp_path):
    with pytest.raises(ValueError, match="no model_index.json"):
        hub.make_hub_layout(tmp_path)
    DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds a 'DDPMPipeline', not a 'SimpleDDPMPipeline'"):
        hub.make_hub_layout(tmp_path)


def test_pipe_push_to_hub_checks_write_access_first_and_uploads_what_loads_by_repo_id(fake_hub, tmp_path):
    pipe = tiny_pipeline(beta_schedule="cosine")
    url = pipe.push_to_hub("alice/ddpm", token=WRITE_TOKEN, private=True)

    assert [method for method, _ in fake_hub.calls][:5] == [
        "whoami",
        "create_repo",
        "create_branch",
        "delete_branch",
        "upload_folder",
    ]
    assert url.startswith("https://huggingface.co/alice/ddpm/commit/") and fake_hub.repos["alice/ddpm"]["private"]
    fake_hub.export_to_cache("alice/ddpm", tmp_path / "cache")
    loaded = SimpleDDPMPipeline.from_pretrained("alice/ddpm", cache_dir=tmp_path / "cache")
    torch.testing.assert_close(samples(loaded), samples(pipe), rtol=0, atol=0)

    pipe.save_pretrained(tmp_path / "saved")
    uploaded = fake_hub.files("alice/ddpm")
    assert {path: uploaded[path] for path in folder_files(tmp_path / "saved")} == folder_files(tmp_path / "saved")
    card = ModelCard(uploaded["README.md"].decode())
    assert card.data.library_name == "diffusers" and "diffusers:SimpleDDPMPipeline" in card.data.tags
    assert card.data.eval_results is None and "Not measured for this upload" in card.text  # nothing to claim
    assert not [path for path, data in fake_hub.all_uploaded_bytes() if WRITE_TOKEN.encode() in data]


def test_pipe_push_to_hub_with_a_read_only_token_fails_before_saving_or_uploading(fake_hub):
    hub.prepare_repo("alice/ddpm", WRITE_TOKEN)
    with pytest.raises(hub.HubAccessError, match="cannot write to alice/ddpm"):
        tiny_pipeline().push_to_hub("alice/ddpm", token=READ_TOKEN)
    assert len(fake_hub.repos["alice/ddpm"]["order"]) == 1


def test_pipe_from_a_trained_folder_pushes_the_measured_card_only_while_its_weights_are_the_measured_ones(
    fake_hub, tmp_path
):
    save_trained_folder(tiny_pipeline(), tmp_path / "trained", bits_per_dim=6.125)
    pipe = SimpleDDPMPipeline.from_pretrained(tmp_path / "trained")

    pipe.push_to_hub("alice/measured", token=WRITE_TOKEN)
    measured = fake_hub.files("alice/measured")
    card = ModelCard(measured["README.md"].decode())
    assert card.data.eval_results[0].metric_value == 6.125 and "**6.1250**" in card.text
    assert 'from_pretrained("alice/measured")' in card.text
    assert measured["samples.png"] == (tmp_path / "trained" / "samples.png").read_bytes()
    assert measured["metrics.json"] == (tmp_path / "trained" / "metrics.json").read_bytes()

    with torch.no_grad():
        pipe.unet.conv_in.bias += 1  # no longer the network that was measured
    pipe.push_to_hub("alice/changed", token=WRITE_TOKEN)
    changed = fake_hub.files("alice/changed")
    assert "metrics.json" not in changed and "samples.png" not in changed
    assert ModelCard(changed["README.md"].decode()).data.eval_results is None
    # diffusers records the folder a pipeline came from when it saves it again; a repo must not show local paths.
    assert not [path for path, data in {**measured, **changed}.items() if str(tmp_path).encode() in data]


def test_save_pretrained_with_push_to_hub_saves_the_folder_and_pushes_the_same_files(fake_hub, tmp_path):
    tiny_pipeline().save_pretrained(tmp_path / "saved", push_to_hub=True, repo_id="alice/ddpm", token=WRITE_TOKEN)

    uploaded = fake_hub.files("alice/ddpm")
    local = folder_files(tmp_path / "saved")
    assert {path: uploaded[path] for path in local} == local
    assert "README.md" in uploaded and "README.md" not in local  # the card goes to the Hub only
