{
  # The node-gyp build (used by prebuildify and by users without CMake). It
  # compiles the same sources as CMakeLists.txt and asks the same locator
  # script for libtorch's include dirs, libraries and ABI flag.
  "targets": [
    {
      "target_name": "torchfold",
      "sources": [
        "<!@(node -e \"const fs=require('fs');for(const d of ['native/core','native/addon'])for(const f of fs.readdirSync(d).sort())if(f.endsWith('.cc'))console.log(d+'/'+f)\")"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(node scripts/libtorch.js --gyp-includes)"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS",
        "NODE_ADDON_API_CPP_EXCEPTIONS_ALL",
        "<!@(node scripts/libtorch.js --gyp-defines)"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["<!@(node scripts/libtorch.js --gyp-std)", "-fexceptions", "-frtti", "-fvisibility=hidden", "-O2", "-Wno-unused-parameter"],
      "ldflags": ["-Wl,-z,now"],
      "libraries": ["<!@(node scripts/libtorch.js --gyp-libs)", "-lz"]
    }
  ]
}
