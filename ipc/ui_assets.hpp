// The status page's files (ipc/ui/), embedded in the binary at build time by
// cmake/embed_ui.cmake (the generated ui_assets.cpp in the build tree). Constant data.
#pragma once

#include <string_view>

namespace fieldsync::ipc {

extern const std::string_view kUiIndexHtml;  // ipc/ui/index.html
extern const std::string_view kUiAppJs;      // ipc/ui/app.js
extern const std::string_view kUiAppCss;     // ipc/ui/app.css

}  // namespace fieldsync::ipc
