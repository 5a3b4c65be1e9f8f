"""A minimal HEAR-2021 style module (load_model / get_scene_embeddings), for the adapter test."""
import torch


class _Model(torch.nn.Module):
    sample_rate = 16000
    scene_embedding_size = 3


def load_model(model_file_path: str = ""):
    return _Model()


def get_scene_embeddings(audio: torch.Tensor, model) -> torch.Tensor:
    return torch.stack([audio.mean(1), audio.std(1), audio.abs().amax(1)], dim=1)
