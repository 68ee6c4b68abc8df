"""Loading a pipeline someone else saved runs none of their code: weights come from safetensors only unless the
caller opts in to pickles, and code in the folder runs only with trust_remote_code=True."""

import json
import shutil

import pytest
import torch
from tiny_pipeline import tiny_pipeline

from simple_ddpm import SimpleDDPMPipeline


def unpickling_is_an_error(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called: a pickle was opened")

    monkeypatch.setattr(torch, "load", refuse)


def test_pickle_only_pipeline_is_refused_with_the_folder_and_how_to_convert(tmp_path, monkeypatch):
    folder = tmp_path / "pickled"
    pipe = tiny_pipeline(seed=3)
    pipe.save_pretrained(folder, safe_serialization=False)
    assert (folder / "unet" / "diffusion_pytorch_model.bin").is_file()
    assert not list(folder.rglob("*.safetensors"))

    with monkeypatch.context() as patched:
        unpickling_is_an_error(patched)
        with pytest.raises(OSError) as refused:
            SimpleDDPMPipeline.from_pretrained(folder)
    message = str(refused.value)
    assert message.startswith(f"{folder} holds pickled weights only (unet/diffusion_pytorch_model.bin)")
    assert "use_safetensors=False).save_pretrained(folder)" in message

    # The opt-in loads the same weights, and the conversion the message gives makes the folder safe to load.
    SimpleDDPMPipeline.from_pretrained(folder, use_safetensors=False).save_pretrained(folder)
    with monkeypatch.context() as patched:
        unpickling_is_an_error(patched)
        loaded = SimpleDDPMPipeline.from_pretrained(folder)
    expected = pipe.unet.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in loaded.unet.state_dict().items())


def test_code_shipped_in_a_folder_does_not_run_without_trust_remote_code(tmp_path):
    folder = tmp_path / "with-code"
    tiny_pipeline().save_pretrained(folder)
    marker = tmp_path / "code-ran"
    (folder / "evil_pipeline.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from simple_ddpm import SimpleDDPMPipeline\n\n\nclass EvilPipeline(SimpleDDPMPipeline):\n    pass\n"
    )
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": ["evil_pipeline", "EvilPipeline"]}))
    component = tmp_path / "with-component-code"
    shutil.copytree(folder, component)
    (component / "evil_pipeline.py").rename(component / "unet" / "evil_unet.py")
    (component / "model_index.json").write_text(json.dumps({**index, "unet": ["evil_unet", "EvilPipeline"]}))

    for untrusted, code in ((folder, "evil_pipeline.py"), (component, "evil_unet.py")):
        with pytest.raises(ValueError, match=rf"(?s)contains custom code in {code}.*trust_remote_code=True"):
            SimpleDDPMPipeline.from_pretrained(untrusted)
    assert not marker.exists()
