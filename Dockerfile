FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY controlroom ./controlroom
RUN pip install --no-cache-dir . && useradd --create-home controlroom
USER controlroom
ENV CONTROLROOM_HOST=0.0.0.0 CONTROLROOM_PORT=8000 CONTROLROOM_DATA_DIR=/home/controlroom/data
EXPOSE 8000
CMD ["controlroom", "serve"]
