"""``plainnet serve``'s model, image decoding and answer on LitServe instead of FastAPI + uvicorn, for the
stack comparison in ``benchmarks/serve_load.py --litserve`` (needs ``pip install litserve``; not a
plainnet dependency).

    python benchmarks/_litserve_app.py MODEL PORT MAX_BATCH MAX_WAIT_MS
"""

from __future__ import annotations

import sys

import litserve as ls
import torch

from plainnet.deploy.serve import ServeOptions, _decode
from plainnet.evaluation.inference import load_inference_model
from plainnet.evaluation.predict import SCHEMA, top_k_entries


class PlainnetAPI(ls.LitAPI):
    def __init__(self, model_path: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_path = model_path

    def setup(self, device) -> None:
        self.model = load_inference_model(self.model_path)
        self.options = ServeOptions()

    def decode_request(self, request) -> torch.Tensor:  # LitServe hands over the multipart form
        upload = request["file"]
        return _decode(upload.filename, upload.file.read(), self.model, self.options)

    def batch(self, images: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(images)

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(self.model.prepare(batch)).float().softmax(1)

    def unbatch(self, probs: torch.Tensor) -> list[torch.Tensor]:
        return list(probs)

    def encode_response(self, row: torch.Tensor) -> dict:
        k = min(self.options.top_k, len(self.model.classes))
        return {"schema": SCHEMA, "classes": list(self.model.classes), "top_k": k,
                "predictions": [{"ok": True, "top_k": top_k_entries(self.model.classes, row, k)}]}


if __name__ == "__main__":
    model, port, max_batch, max_wait_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    api = PlainnetAPI(model, max_batch_size=max_batch, batch_timeout=max_wait_ms / 1000, api_path="/v1/predict")
    ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1).run(
        host="127.0.0.1", port=port, generate_client_file=False)
