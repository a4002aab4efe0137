"""The peer: the seed documents' recipe, for benchmarks/bench_peer.py to measure against.

Flask under gunicorn (two sync workers), eager fp32 PyTorch ResNet-18 (seeded random
weights: same compute as the real ones), one image per request, torchvision transforms.

    gunicorn -w 2 -b 127.0.0.1:8001 benchmarks.peer_app:app
"""

from __future__ import annotations

import io

import torch
import torchvision
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from PIL import Image
from torchvision import transforms

app = Flask(__name__)
# One thread per sync worker: two workers on two cores, not four threads fighting for two.
torch.set_num_threads(1)
torch.manual_seed(0)
model = torchvision.models.resnet18().eval()
preprocess = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ]
)


@app.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok")


@app.post("/v1/classify")
def classify() -> ResponseReturnValue:
    image = Image.open(io.BytesIO(request.get_data())).convert("RGB")
    with torch.inference_mode():
        probabilities = model(preprocess(image).unsqueeze(0)).softmax(1)[0]
    scores, indices = probabilities.topk(5)
    return jsonify(
        predictions=[
            {"index": int(i), "score": float(s)}
            for s, i in zip(scores.tolist(), indices.tolist(), strict=True)
        ]
    )
