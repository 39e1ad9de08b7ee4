// The fuse report as a plain JS object (shape described by lib/report.ts).
#pragma once

#include <napi.h>

#include "../core/fuse.h"
#include "../core/graph_info.h"

namespace torchfold::addon {

Napi::Object to_js_graph(Napi::Env env, const core::GraphInfo& info);

Napi::Object to_js_report(Napi::Env env, const core::FuseReport& report);

}  // namespace torchfold::addon
