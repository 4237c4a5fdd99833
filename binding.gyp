{
  "targets": [
    {
      "target_name": "vmifs_native",
      "sources": ["native/vmifs_native.c", "native/fuse_session.c"],
      "cflags": ["-O3", "-std=gnu11", "-Wall", "-pthread"],
      "ldflags": ["-pthread"],
      "defines": ["NAPI_VERSION=8"]
    },
    {
      "target_name": "vmifs-fuse-holder",
      "type": "executable",
      "sources": ["native/fuse_holder.c"],
      "cflags": ["-O2", "-std=gnu11", "-Wall"]
    }
  ]
}
