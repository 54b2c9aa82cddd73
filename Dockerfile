# GPU image: CUDA PyTorch (the torch version composer 0.32 allows) + mosaic_pretrain[gpu,wandb].
FROM pytorch/pytorch:2.7.0-cuda12.6-cudnn9-devel

# flash-attn compiles against the torch already in the image, so no build isolation; MAX_JOBS
# bounds the compiler's memory use.
ENV MAX_JOBS=8 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

WORKDIR /workspace/mosaic_pretrain
COPY pyproject.toml README.md ./
COPY mosaic_pretrain ./mosaic_pretrain
COPY configs ./configs
COPY scripts ./scripts
RUN pip install ninja packaging \
    && pip install --no-build-isolation -e ".[gpu,wandb]" \
    && python -c "import flash_attn, mosaic_pretrain.model; print('flash-attn', flash_attn.__version__)"

CMD ["mosaic-pretrain", "--help"]
