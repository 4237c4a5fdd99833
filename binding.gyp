{
  "targets": [
    {
      "target_name": "vmifs_native",
      "sources": ["native/vmifs_native.c"],
      "cflags": ["-O3", "-std=c99", "-Wall"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
