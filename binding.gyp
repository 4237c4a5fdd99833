{
  "variables": {
    "blake3_dir": "<!(sh native/blake3-dir.sh)"
  },
  "targets": [
    {
      "target_name": "vmifs_native",
      "sources": [
        "native/vmifs_native.c",
        "native/fuse_session.c",
        "native/pack_writer.c",
        "native/chunker.c",
        "native/chunk_index.c",
        "native/crc32c.c",
        "<(blake3_dir)/blake3.c",
        "<(blake3_dir)/blake3_dispatch.c",
        "<(blake3_dir)/blake3_portable.c",
        "<(blake3_dir)/blake3_sse2_x86-64_unix.S",
        "<(blake3_dir)/blake3_sse41_x86-64_unix.S",
        "<(blake3_dir)/blake3_avx2_x86-64_unix.S",
        "<(blake3_dir)/blake3_avx512_x86-64_unix.S"
      ],
      "include_dirs": ["<(blake3_dir)"],
      "cflags": ["-O3", "-std=gnu11", "-Wall", "-pthread"],
      "ldflags": ["-pthread"],
      "libraries": ["-llmdb"],
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
