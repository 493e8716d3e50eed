# Sync benchmark (bench/README.md "Sync"): two devices over real TCP + TLS on loopback.
add_executable(sync_bench ${CMAKE_CURRENT_LIST_DIR}/sync_bench.cpp)
target_link_libraries(sync_bench PRIVATE fs_peers fs_transport_tcp fs_storage Boost::headers spdlog::spdlog Threads::Threads)
