"""``/v1/models``: the models this server has loaded."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from strata.audio import NETWORK_ROLES, Vocoder, default_iterations, entry_vocoders
from strata.registry import ModelEntry
from strata.server.deps import CodecsDep, require_api_key
from strata.server.errors import responses

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(require_api_key)])


class ModelInfo(BaseModel):
    """One loaded model, as the manifest describes it."""

    name: str
    modality: str = Field(description="image or audio")
    quantizer: str = Field(description="quantizer family: rvq (residual VQ), rsq (HQ-VAE stochastic residual), hrvq "
                                       "(HR-VQVAE codebook tree), topbottom (VQ-VAE-2/HQ-TVAE two-scale) or "
                                       "sq-topbottom (its stochastic twin, SQ-VAE-2)")
    layers: int = Field(description="number of layers L (any prefix of them decodes)")
    top_layers: int = Field(description="the first layers that hold one code per 2×2 block of the code grid "
                                        "(two-scale families; 0 otherwise): in a codes array each such code is "
                                        "repeated over its block")
    codebook_sizes: list[int] = Field(description="codebook size K of each layer")
    factor: int = Field(description="image: downsampling factor, the code grid of an H×W image is ⌈H/f⌉×⌈W/f⌉; "
                                    "audio: mel frames (of 256 samples) per code column")
    bits_per_layer: list[float] = Field(description="mean coded bits of each layer on the eval set, per image or "
                                                    "clip (empty when not measured)")
    bpp_per_layer: list[float] = Field(description="image: mean bpp of the whole stream with 1..L layers on the "
                                                   "eval set (empty when not measured or for audio)")
    kbps_per_layer: list[float] = Field(description="audio: mean kbit/s of the whole stream with 1..L layers on the "
                                                    "eval set, from the manifest's `extra.kbps_per_layer` (empty "
                                                    "when not measured or for images)")
    sample_rate: int | None = Field(description="audio: the codec's sample rate (22050); null for images")
    vocoders: list[str] = Field(description="audio: the vocoder= values this model takes (hifigan, vocos where it "
                                            "has a Vocos network, griffinlim); empty for images")
    default_vocoder: str | None = Field(description="audio: the vocoder a decode uses when none is named; null for "
                                                    "images")
    default_refine: dict[str, int] = Field(default_factory=dict, description="audio: each network vocoder's "
                                           "mel-consistency iterations when refine= is not given; empty for images")
    description: str
    weights_sha256: str = Field(description="first 16 hex digits of the weights hash (streams carry 8 bytes)")
    default: bool = Field(description="whether this is the default model of its modality")

    @classmethod
    def of(cls, entry: ModelEntry, default: bool) -> ModelInfo:
        audio = entry.modality == "audio"
        kbps = entry.extra.get("kbps_per_layer", []) if audio else []
        rate = entry.extra.get("sample_rate") if audio else None
        return cls(
            name=entry.name, modality=entry.modality, quantizer=entry.quantizer, layers=entry.layers,
            top_layers=top_layers(entry), codebook_sizes=list(entry.codebook_sizes),
            factor=entry.factor, bits_per_layer=list(entry.bits_per_layer), bpp_per_layer=list(entry.bpp_per_layer),
            kbps_per_layer=[float(k) for k in kbps] if isinstance(kbps, list) and all(
                isinstance(k, (int, float)) for k in kbps) else [],
            sample_rate=int(rate) if isinstance(rate, int) else None,
            vocoders=[v.value for v in entry_vocoders(entry)] if audio else [],
            default_vocoder=str(entry.extra.get("vocoder", Vocoder.HIFIGAN.value)) if audio else None,
            default_refine={v.value: default_iterations(entry, v) for v in entry_vocoders(entry)
                            if v in NETWORK_ROLES} if audio else {},
            description=entry.description, weights_sha256=entry.weights_sha256[:16], default=default,
        )


def top_layers(entry: ModelEntry) -> int:
    """The manifest's ``extra.top_layers`` of a two-scale model (0 for the others)."""
    value = entry.extra.get("top_layers", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= entry.layers else 0


@router.get("/models", summary="List the loaded models", responses=responses(401, 503))
async def list_models(codecs: CodecsDep) -> list[ModelInfo]:
    return [ModelInfo.of(e, codecs.is_default(e)) for e in codecs.entries]


@router.get("/models/{name}", summary="Describe one loaded model", responses=responses(401, 404, 503))
async def get_model(name: str, codecs: CodecsDep) -> ModelInfo:
    entry = codecs.model(name)
    return ModelInfo.of(entry, codecs.is_default(entry))
