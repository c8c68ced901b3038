"""Export a checkpoint to ONNX, checked against PyTorch with onnxruntime; optionally int8-quantized.

    pip install -r requirements-extras.txt
    python export.py model_mnist_<stamp>_acc<acc>.pth           # -> model_mnist_<stamp>_acc<acc>.onnx
    python export.py CHECKPOINT --int8                          # also <stem>.int8.onnx, with its accuracy

The ONNX model takes what the PyTorch one takes: (batch, 1, 28, 28) float pixels normalised as
(x / 255 - 0.1307) / 0.3081, any batch size; it returns (batch, 10) log-probabilities.
"""
import cli

if __name__ == "__main__":
    cli.exit_quietly_on_signals()

import io
import os
import tempfile
import warnings

import torch

from checkpoint import load_checkpoint
from data import load_mnist, to_input
from inference import probabilities
from model import MODELS

MAX_ABS_DIFF = 1e-4      # ONNX Runtime vs PyTorch, float model, in probability
MAX_INT8_DROP = 0.2      # accuracy points the int8 model may lose against the float one
CALIBRATION_IMAGES = 1024


def build_parser():
    p = cli.parser(__doc__)
    p.add_argument("checkpoint", help="a model_mnist_*.pth (its .json sidecar beside it)")
    p.add_argument("--out", help="ONNX file to write, or a folder to write it in (default: the checkpoint's stem "
                   "+ .onnx beside it)")
    p.add_argument("--model", help=f"variant, when the checkpoint has no sidecar: {', '.join(MODELS)}")
    p.add_argument("--int8", action="store_true",
                   help="also write <stem>.int8.onnx: static int8 quantization calibrated on training images")
    cli.add_data_dir(p, "MNIST root: real test images for the check, training images for calibration")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    default = os.path.splitext(args.checkpoint)[0] + ".onnx"
    if args.out is None:
        args.out = default
    elif os.path.isdir(args.out):
        args.out = os.path.join(args.out, os.path.basename(default))
    return args


def import_onnx_tools():
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime
    except ImportError as e:
        raise cli.UserError(f"{e.name} is not installed: pip install -r requirements-extras.txt") from None
    return onnxruntime


def export_onnx(model):
    """The model as ONNX (bytes) with a dynamic batch dimension."""
    model.eval()
    buf = io.BytesIO()
    # The TorchScript exporter (deprecated in favour of torch.export, which needs onnxscript and
    # torch._dynamo) handles a plain CNN exactly, as the onnxruntime check in main proves.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(2, 1, 28, 28),), buf, input_names=["input"],
                          output_names=["log_probs"], dynamic_axes={"input": {0: "batch"}, "log_probs": {0: "batch"}},
                          dynamo=False)
    return buf.getvalue()


def run_onnx(ort, onnx_model, x):
    """The ONNX model's (bytes) outputs for x, from onnxruntime on the CPU."""
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def accuracy(scores, labels):
    return 100 * (scores.argmax(1) == labels).float().mean().item()


def quantize_int8(float_onnx, calibration):
    """The float ONNX model (bytes) after post-training static quantization (QDQ, per-channel weights)
    calibrated on `calibration`, as bytes."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration.split(128))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch.numpy()}

    with tempfile.TemporaryDirectory() as tmp:  # onnxruntime's quantization tools work on files
        float_path, prepared, quantized = (os.path.join(tmp, f) for f in ("float.onnx", "prepared.onnx", "int8.onnx"))
        with open(float_path, "wb") as f:
            f.write(float_onnx)
        # The preprocessing onnxruntime recommends: shape inference and graph clean-up before quantizing.
        quant_pre_process(float_path, prepared)
        quantize_static(prepared, quantized, Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        with open(quantized, "rb") as f:
            return f.read()


def main(argv=None):
    args = parse_args(argv)
    ort = import_onnx_tools()
    int8_path = os.path.splitext(args.out)[0] + ".int8.onnx"
    for path in [args.out] + ([int8_path] if args.int8 else []):
        cli.check_out_file(path, "--out")
    model, _ = load_checkpoint(args.checkpoint, args.model)
    test_x, test_y = load_mnist(args.data_dir, "test", "cpu")
    inputs = to_input(test_x)

    # Checked before it is written: an export that does not match PyTorch leaves no file.
    float_onnx = export_onnx(model)
    expected = probabilities(model, test_x)
    got = torch.cat([run_onnx(ort, float_onnx, inputs[:1]), run_onnx(ort, float_onnx, inputs[1:])]).exp()  # 1, 9,999
    diff = (got - expected).abs().max().item()
    if diff > MAX_ABS_DIFF:
        raise cli.RunFailed(f"the ONNX model's probabilities differ from PyTorch's by {diff:.2e} (> {MAX_ABS_DIFF}) "
                            "on the test images; report it with your torch and onnx versions")
    float_acc = accuracy(got, test_y)
    cli.atomic_write(args.out, float_onnx)
    print(f"wrote {args.out} ({len(float_onnx):,} bytes) | max |onnxruntime - pytorch| = {diff:.2e} "
          f"(probabilities) on {len(test_y):,} test images | accuracy {float_acc:.2f}%")

    if args.int8:
        train_x, _ = load_mnist(args.data_dir, "train", "cpu")
        pick = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))[:CALIBRATION_IMAGES]
        int8_onnx = quantize_int8(float_onnx, to_input(train_x[pick]))
        int8_acc = accuracy(run_onnx(ort, int8_onnx, inputs), test_y)
        cli.atomic_write(int8_path, int8_onnx)
        drop = float_acc - int8_acc
        print(f"wrote {int8_path} ({len(int8_onnx):,} bytes, float {len(float_onnx):,}) | "
              f"accuracy {int8_acc:.2f}% vs float {float_acc:.2f}% (drop {drop:+.2f} points, "
              f"{'within' if drop <= MAX_INT8_DROP else 'OVER'} the {MAX_INT8_DROP}-point budget)")


if __name__ == "__main__":
    cli.run_cli(main)
