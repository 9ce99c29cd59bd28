# vit-explain: one app replica (a Streamlit server on port 8501). deploy/compose.yaml runs N of these
# behind nginx with session affinity; `docker run -p 8501:8501 vit-explain` runs one on its own.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # A shared server: no "checkpoint folder on this computer" box (see the README's classroom notes).
    VIT_EXPLAIN_CLASSROOM=1 \
    # One replica serves many students; torch's own threads would fight over the replica's CPU share.
    OMP_NUM_THREADS=1 \
    HF_HOME=/home/app/.cache/huggingface

# The CPU build of torch first: a plain "torch" from PyPI pulls the multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.2"

RUN useradd --create-home --uid 1000 app
WORKDIR /app

# Dependencies before the code, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
COPY vit_explain ./vit_explain
RUN pip install .

# The app itself: entry point, pages, Streamlit settings (.streamlit/config.toml), samples and the
# bundled models.
COPY app.py ./
COPY pages ./pages
COPY .streamlit ./.streamlit
COPY assets ./assets

USER app
EXPOSE 8501
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"

# Nobody edits the code inside the container: no file watcher.
CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0", "--server.fileWatcherType=none"]
