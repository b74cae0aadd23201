"""Where a model comes from: download-model takes its files from one of these.

hub           a Hugging Face Hub repo: resolve a revision, list and download the files
hub_transfer  the file bodies from the Hub, received into the file and hashed on the way
local         a local directory, its files hard-linked (or copied) into the workspace
"""
