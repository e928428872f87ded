{
  "targets": [
    {
      "target_name": "refcow_fileops",
      "sources": ["native/fileops.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
