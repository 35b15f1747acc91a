FROM python:3.11-slim
WORKDIR /app
# The pinned, hashed runtime lock first: this layer is rebuilt only when the lock changes.
COPY requirements/runtime.txt requirements/runtime.txt
RUN pip install --no-cache-dir -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY dispatcher ./dispatcher
# EXTRAS: optional extras of pyproject.toml to add, e.g. "flower" (the compose flower service)
ARG EXTRAS=""
RUN pip install --no-cache-dir --no-deps . \
    && if [ -n "$EXTRAS" ]; then pip install --no-cache-dir ".[$EXTRAS]"; fi \
    && useradd --create-home dispatcher
USER dispatcher
ENV DISPATCHER_API_HOST=0.0.0.0
EXPOSE 8087
CMD ["dispatcher", "api", "--host", "0.0.0.0", "--port", "8087"]
