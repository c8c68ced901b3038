"""Export a checkpoint to ONNX, checked against PyTorch with onnxruntime; optionally int8-quantized.

    pip install -r requirements-extras.txt
    python export.py model_mnist_<stamp>_acc<acc>.pth           # -> model_mnist_<stamp>_acc<acc>.onnx
    python export.py CHECKPOINT --int8                          # also <stem>.int8.onnx, with its accuracy

The ONNX model takes what the PyTorch one takes: (batch, 1, 28, 28) float pixels normalised as
(x / 255 - 0.1307) / 0.3081, any batch size; it returns (batch, 10) log-probabilities.
"""
import os
import shutil
import tempfile
import warnings

import torch

import cli
from checkpoint import load_checkpoint
from data import load_mnist, to_input
from inference import probabilities
from model import MODELS

MAX_ABS_DIFF = 1e-4      # ONNX Runtime vs PyTorch, float model, in probability
MAX_INT8_DROP = 0.2      # accuracy points the int8 model may lose against the float one
CALIBRATION_IMAGES = 1024


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("checkpoint", help="a model_mnist_*.pth (its .json sidecar beside it)")
    p.add_argument("--out", help="ONNX file to write (default: the checkpoint's stem + .onnx)")
    p.add_argument("--model", help=f"variant, when the checkpoint has no sidecar: {', '.join(MODELS)}")
    p.add_argument("--int8", action="store_true",
                   help="also write <stem>.int8.onnx: static int8 quantization calibrated on training images")
    cli.add_data_dir(p, "MNIST root: real test images for the check, training images for calibration")
    args = p.parse_args(argv)
    args.out = args.out or os.path.splitext(args.checkpoint)[0] + ".onnx"
    return args


def import_onnx_tools():
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime
    except ImportError as e:
        raise cli.UserError(f"{e.name} is not installed: pip install -r requirements-extras.txt") from None
    return onnxruntime


def export_onnx(model, path):
    """Write the model as ONNX with a dynamic batch dimension, atomically."""
    model.eval()
    example = torch.zeros(2, 1, 28, 28)
    tmp = path + ".partial"
    try:
        # The TorchScript exporter (deprecated in favour of torch.export, which needs onnxscript and
        # torch._dynamo) handles a plain CNN exactly, as the onnxruntime check below proves.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (example,), tmp, input_names=["input"], output_names=["log_probs"],
                              dynamic_axes={"input": {0: "batch"}, "log_probs": {0: "batch"}}, dynamo=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run_onnx(ort, path, x):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def accuracy(scores, labels):
    return 100 * (scores.argmax(1) == labels).float().mean().item()


def quantize_int8(float_path, int8_path, calibration):
    """Post-training static quantization (QDQ, per-channel weights) calibrated on `calibration`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration.split(128))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch.numpy()}

    with tempfile.TemporaryDirectory() as tmp:
        # The preprocessing onnxruntime recommends: shape inference and graph clean-up before quantizing.
        prepared, quantized = os.path.join(tmp, "prepared.onnx"), os.path.join(tmp, "int8.onnx")
        quant_pre_process(float_path, prepared)
        quantize_static(prepared, quantized, Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        shutil.move(quantized, int8_path)  # across file systems too


def main(argv=None):
    args = parse_args(argv)
    ort = import_onnx_tools()
    model, _ = load_checkpoint(args.checkpoint, args.model)
    test_x, test_y = load_mnist(args.data_dir, "test", "cpu")
    cli.check_out_dir(os.path.dirname(args.out) or ".")
    inputs = to_input(test_x)

    export_onnx(model, args.out)
    expected = probabilities(model, test_x)
    got = torch.cat([run_onnx(ort, args.out, inputs[:1]), run_onnx(ort, args.out, inputs[1:])]).exp()  # batch 1, 9,999
    diff = (got - expected).abs().max().item()
    float_acc = accuracy(got, test_y)
    print(f"wrote {args.out} ({os.path.getsize(args.out):,} bytes) | max |onnxruntime - pytorch| = {diff:.2e} "
          f"(probabilities) on {len(test_y):,} test images | accuracy {float_acc:.2f}%")
    if diff > MAX_ABS_DIFF:
        os.unlink(args.out)
        raise cli.UserError(f"ONNX output differs from PyTorch by {diff:.2e} (> {MAX_ABS_DIFF}); nothing kept")

    if args.int8:
        int8_path = os.path.splitext(args.out)[0] + ".int8.onnx"
        train_x, _ = load_mnist(args.data_dir, "train", "cpu")
        pick = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))[:CALIBRATION_IMAGES]
        calibration = to_input(train_x[pick])
        quantize_int8(args.out, int8_path, calibration)
        int8_acc = accuracy(run_onnx(ort, int8_path, inputs), test_y)
        drop = float_acc - int8_acc
        print(f"wrote {int8_path} ({os.path.getsize(int8_path):,} bytes, float {os.path.getsize(args.out):,}) | "
              f"accuracy {int8_acc:.2f}% vs float {float_acc:.2f}% (drop {drop:+.2f} points, "
              f"{'within' if drop <= MAX_INT8_DROP else 'OVER'} the {MAX_INT8_DROP}-point budget)")


if __name__ == "__main__":
    cli.run_cli(main)
