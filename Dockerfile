FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY dispatcher ./dispatcher
# EXTRAS: optional extras of pyproject.toml to add, e.g. "flower" (the compose flower service)
ARG EXTRAS=""
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" && useradd --create-home dispatcher
USER dispatcher
ENV DISPATCHER_API_HOST=0.0.0.0
EXPOSE 8087
CMD ["dispatcher", "api", "--host", "0.0.0.0", "--port", "8087"]
