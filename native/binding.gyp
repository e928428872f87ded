{
  "targets": [
    {
      "target_name": "refcow_fileops",
      "sources": ["fileops.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
