"""The pipeline's stages. The names are also the Tekton task names and the SKIP_TASKS words."""

CLEANUP = "cleanup-workspace"
DOWNLOAD = "download-model"
COMPRESS = "compress-model"
BUILD_PUSH = "build-and-push"
REGISTER = "register-model"

STAGE_NAMES: tuple[str, ...] = (CLEANUP, DOWNLOAD, COMPRESS, BUILD_PUSH, REGISTER)
