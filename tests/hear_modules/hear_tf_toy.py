"""A HEAR-2021 style module in TensorFlow: it takes tf tensors and returns an EagerTensor.

`load_model(path)` reads the projection from a .npz file (arrays only, no pickle) when given one.
"""
import numpy as np
import tensorflow as tf

__version__ = "0.3.1"
BANDS = 8


class Model(tf.Module):
    sample_rate = 16000
    scene_embedding_size = 4

    def __init__(self, projection: np.ndarray):
        super().__init__()
        self.projection = tf.Variable(projection.astype(np.float32), trainable=False)


def load_model(model_file_path: str = "") -> Model:
    if model_file_path:
        with np.load(model_file_path, allow_pickle=False) as f:
            return Model(f["projection"])
    return Model(np.random.default_rng(0).standard_normal((BANDS, Model.scene_embedding_size)))


def get_scene_embeddings(audio: tf.Tensor, model: Model) -> tf.Tensor:
    if not tf.is_tensor(audio):
        raise TypeError(f"hear_tf_toy takes tf tensors, got {type(audio).__name__}")
    frames = tf.signal.frame(audio, 400, 160, pad_end=True)                 # [n, frames, 400]
    power = tf.abs(tf.signal.rfft(frames)) ** 2                              # [n, frames, 201]
    bands = tf.reduce_mean(tf.reshape(power[..., :200], (tf.shape(power)[0], -1, BANDS, 25)), -1)
    return tf.reduce_mean(tf.math.log(bands + 1e-6), axis=1) @ model.projection
