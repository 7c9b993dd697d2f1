"""Compute device set-up.

Importing this module prepares TensorFlow (when it is the Keras backend): GPUs,
if any, get memory growth, so several worker processes can share one card;
without a GPU everything runs on the CPU. This is the only module that talks
to TensorFlow directly; the rest of the core uses Keras 3 ops and runs on the
JAX or PyTorch backends too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import keras

log = logging.getLogger(__name__)

_configured = False


def _setup() -> None:
    global _configured
    if _configured:
        return
    _configured = True
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    threads = os.environ.get("SENSEFLOSSER_THREADS")
    if threads:
        n = int(threads)
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(min(n, 2))
        except RuntimeError:  # already initialised by someone else
            log.warning("TensorFlow was initialised before its thread count could be set")
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            log.warning("memory growth could not be enabled on %s (already initialised)", gpu.name)


def compile_stateless(model: keras.Model) -> Callable:
    """``model.stateless_call`` for inference, compiled the way this backend compiles best.

    The result is ``f(trainable, non_trainable, x) -> (y, non_trainable)``:
    weights and state are arguments, so every model of the same architecture
    (a damaged copy, say) runs through the same compiled function, and a job
    never triggers a new compilation for new weights.

    - tensorflow: a ``tf.function`` with an input signature taken from the
      model, the frame axis of a variable-length model left open: it is traced
      once, whatever the chunk lengths. In graph mode TensorFlow fuses the conv,
      bias and activation ops, which saves time and most of the memory an
      eager call needs for intermediate tensors.
    - jax: ``jax.jit`` (one compilation per chunk length; chunking keeps those few).
    - other backends: the plain stateless call.

    Parameters
    ----------
    model : keras.Model
        Any model; ``x`` has the shape of its (single) input.

    Returns
    -------
    callable
    """

    def call(trainable, non_trainable, x):
        return model.stateless_call(trainable, non_trainable, x, training=False)

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def spec(v):
            return tf.TensorSpec(v.shape, v.dtype)

        signature = [
            [spec(v) for v in model.trainable_variables],
            [spec(v) for v in model.non_trainable_variables],
            tf.TensorSpec(model.inputs[0].shape, model.inputs[0].dtype),
        ]
        return tf.function(call, input_signature=signature, autograph=False)
    if backend == "jax":
        import jax

        return jax.jit(call)
    return call


def compile_loss_gradient(model: keras.Model, loss: Callable) -> Callable:
    """``f(trainable, non_trainable, x, target) -> (loss, gradients)`` for the model's weights, compiled.

    ``loss(y, target)`` is written in ``keras.ops``; ``gradients`` follow the
    order of ``model.trainable_variables``. Used to find worst-case damage
    (:mod:`senseflosser.actions.adversarial`).

    Raises
    ------
    ModelError
        On a backend other than TensorFlow or JAX.
    """
    from .errors import ModelError

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def step(trainable, non_trainable, x, target):
            with tf.GradientTape() as tape:
                tape.watch(trainable)
                y, _ = model.stateless_call(trainable, non_trainable, x, training=False)
                value = loss(y, target)
            return value, tape.gradient(value, trainable)

        return tf.function(step, reduce_retracing=True, autograph=False)
    if backend == "jax":
        import jax

        def value(trainable, non_trainable, x, target):
            y, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return loss(y, target)

        grad = jax.jit(jax.value_and_grad(value))
        return lambda trainable, non_trainable, x, target: grad(trainable, non_trainable, x, target)
    raise ModelError(f"gradients of a model are only computed on the tensorflow and jax backends, not {backend}")


def compile_input_gradient(objective: Callable) -> Callable:
    """``f(x, reference, weights) -> (values, gradient)``: an objective's terms and the gradient of their weighted sum.

    ``objective(x, reference)`` maps a 1-D float32 tensor (a waveform of any
    length) and a fixed 1-D reference tensor (what the audio is compared
    with: a dream passes its input's onset envelope; no gradient flows to it)
    to a 1-D tensor of terms, written in
    ``keras.ops``; ``gradient`` is ``d sum(weights * values) / dx``, shaped
    like ``x``. Compiled; traced once for every length (used to dream:
    :mod:`senseflosser.dream`).

    Raises
    ------
    ModelError
        On a backend other than TensorFlow or JAX.
    """
    from .errors import ModelError

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def step(x, reference, weights):
            with tf.GradientTape() as tape:
                tape.watch(x)
                values = objective(x, reference)
                total = tf.reduce_sum(values * weights)
            return values, tape.gradient(total, x)

        signature = [tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32),
                     tf.TensorSpec([None], tf.float32)]
        return tf.function(step, input_signature=signature, autograph=False)
    if backend == "jax":
        import jax

        def total(x, reference, weights):
            values = objective(x, reference)
            return (values * weights).sum(), values

        grad = jax.jit(jax.value_and_grad(total, has_aux=True))

        def call(x, reference, weights):
            (_, values), g = grad(x, reference, weights)
            return values, g

        return call
    raise ModelError(f"gradients of the input are only computed on the tensorflow and jax backends, not {backend}")


def trace_count(fn: Callable) -> int:
    """How many times a function from :func:`compile_stateless` has been traced (1 where it cannot tell)."""
    counter = getattr(fn, "experimental_get_tracing_count", None)
    if counter is not None:
        return int(counter())
    cache_size = getattr(fn, "_cache_size", None)  # jax.jit
    return int(cache_size()) if callable(cache_size) else 1


def describe() -> str:
    """Name the device the models run on.

    Returns
    -------
    str
        For example ``"GPU (NVIDIA H100 80GB HBM3), tensorflow"`` or ``"CPU, tensorflow"``.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"GPU ({details.get('device_name', gpus[0].name)}), tensorflow"
        return "CPU, tensorflow"
    if backend == "jax":
        import jax

        dev = jax.devices()[0]
        kind = "GPU" if dev.platform == "gpu" else dev.platform.upper()
        return f"{kind} ({dev.device_kind}), jax"
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"GPU ({torch.cuda.get_device_name(0)}), torch"
        return "CPU, torch"
    return f"{backend}"


_setup()
