FROM python:3.11-slim
WORKDIR /app
# The pinned, hashed runtime lock first: this layer is rebuilt only when the lock changes.
COPY requirements/runtime.txt requirements/runtime.txt
RUN pip install --no-cache-dir -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY dispatcher ./dispatcher
RUN pip install --no-cache-dir --no-deps . && useradd --create-home dispatcher
USER dispatcher
ENV DISPATCHER_API_HOST=0.0.0.0
EXPOSE 8087
CMD ["dispatcher", "api", "--host", "0.0.0.0", "--port", "8087"]
