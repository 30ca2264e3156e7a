// The part of Redis's module API (Redis 7.0, API version 1) that cache/redis_module/ifm_module.cpp
// uses, declared here rather than taken from Redis's redismodule.h, which Debian does not ship.
//
// How a module binds to the server: Redis calls RedisModule_OnLoad(ctx, ...), and the first word
// of `ctx` is a function `int get_api(const char* name, void* out)` that stores the address of
// the API function `name` in *out. Each entry below is such a function pointer, filled by
// `bind` at load time; a name the server does not know fails the load.
#pragma once

#include <cstddef>

extern "C" {
struct RedisModuleCtx;
struct RedisModuleString;
struct RedisModuleKey;
struct RedisModuleScanCursor;
using RedisModuleCmdFunc = int (*)(RedisModuleCtx*, RedisModuleString**, int);
using RedisModuleScanKeyCB = void (*)(RedisModuleKey*, RedisModuleString* field, RedisModuleString* value,
                                      void* privdata);
}

namespace ifm::redis_module::api {

inline constexpr int ok = 0;      // REDISMODULE_OK
inline constexpr int err = 1;     // REDISMODULE_ERR
inline constexpr int apiver_1 = 1;

// RedisModule_OpenKey modes
inline constexpr int read = 1 << 0;
inline constexpr int write = 1 << 1;

// RedisModule_KeyType
inline constexpr int keytype_empty = 0;
inline constexpr int keytype_string = 1;
inline constexpr int keytype_hash = 3;

inline constexpr long long no_expire = -1;   // RedisModule_GetExpire: the key has no TTL

// RedisModule_HashGet / HashSet flags, and the value that deletes a field
inline constexpr int hash_none = 0;
inline constexpr int hash_cfields = 1 << 2;   // field names are C strings
inline RedisModuleString* const hash_delete = reinterpret_cast<RedisModuleString*>(static_cast<long>(1));

// The entries, named as in the server (RedisModule_<name>).
#define IFM_REDIS_MODULE_API(X)                                                                        \
    X(CreateCommand, int, RedisModuleCtx*, const char*, RedisModuleCmdFunc, const char*, int, int, int) \
    X(SetModuleAttribs, void, RedisModuleCtx*, const char*, int, int)                                  \
    X(AutoMemory, void, RedisModuleCtx*)                                                              \
    X(WrongArity, int, RedisModuleCtx*)                                                               \
    X(OpenKey, RedisModuleKey*, RedisModuleCtx*, RedisModuleString*, int)                             \
    X(CloseKey, void, RedisModuleKey*)                                                                \
    X(KeyType, int, RedisModuleKey*)                                                                  \
    X(ValueLength, std::size_t, RedisModuleKey*)                                                      \
    X(HashGet, int, RedisModuleKey*, int, ...)                                                        \
    X(HashSet, int, RedisModuleKey*, int, ...)                                                        \
    X(ScanCursorCreate, RedisModuleScanCursor*, void)                                                 \
    X(ScanCursorDestroy, void, RedisModuleScanCursor*)                                                \
    X(ScanKey, int, RedisModuleKey*, RedisModuleScanCursor*, RedisModuleScanKeyCB, void*)             \
    X(StringDMA, char*, RedisModuleKey*, std::size_t*, int)                                           \
    X(StringSet, int, RedisModuleKey*, RedisModuleString*)                                            \
    X(GetExpire, long long, RedisModuleKey*)                                                          \
    X(SetExpire, int, RedisModuleKey*, long long)                                                     \
    X(DeleteKey, int, RedisModuleKey*)                                                                \
    X(Replicate, int, RedisModuleCtx*, const char*, const char*, ...)                                 \
    X(GetUsedMemoryRatio, float, void)                                                                \
    X(Milliseconds, long long, void)                                                                  \
    X(CreateString, RedisModuleString*, RedisModuleCtx*, const char*, std::size_t)                    \
    X(StringPtrLen, const char*, const RedisModuleString*, std::size_t*)                              \
    X(ReplyWithArray, int, RedisModuleCtx*, long)                                                     \
    X(ReplyWithStringBuffer, int, RedisModuleCtx*, const char*, std::size_t)                          \
    X(ReplyWithLongLong, int, RedisModuleCtx*, long long)                                             \
    X(ReplyWithError, int, RedisModuleCtx*, const char*)

#define IFM_REDIS_MODULE_DECLARE(name, ret, ...) inline ret (*name)(__VA_ARGS__) = nullptr;
IFM_REDIS_MODULE_API(IFM_REDIS_MODULE_DECLARE)
#undef IFM_REDIS_MODULE_DECLARE

// Fills every entry from the server's get_api; false if one is missing.
inline bool bind(RedisModuleCtx* ctx) {
    using get_api_fn = int (*)(const char*, void*);
    auto get_api = reinterpret_cast<get_api_fn>(reinterpret_cast<void**>(ctx)[0]);
    bool all = true;
#define IFM_REDIS_MODULE_BIND(name, ...) \
    all = get_api("RedisModule_" #name, reinterpret_cast<void*>(&name)) == ok && all;
    IFM_REDIS_MODULE_API(IFM_REDIS_MODULE_BIND)
#undef IFM_REDIS_MODULE_BIND
    return all;
}

}  // namespace ifm::redis_module::api
