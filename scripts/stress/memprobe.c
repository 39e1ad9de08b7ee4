/* A probe addon for the memory scenario and test/memory.test.ts (built with cc by
   scripts/stress/memprobe.js): V8's external-memory counter and glibc's malloc statistics,
   which Node does not expose. Node resolves the napi_* symbols when it loads it. */
#include <malloc.h>
#include <stddef.h>
#include <stdint.h>
typedef struct napi_env__* napi_env;
typedef struct napi_value__* napi_value;
typedef struct napi_callback_info__* napi_callback_info;
typedef int napi_status;
typedef napi_value (*napi_callback)(napi_env, napi_callback_info);
napi_status napi_adjust_external_memory(napi_env, int64_t, int64_t*);
napi_status napi_create_double(napi_env, double, napi_value*);
napi_status napi_create_function(napi_env, const char*, size_t, napi_callback, void*, napi_value*);
napi_status napi_set_named_property(napi_env, napi_value, const char*, napi_value);
static napi_value num(napi_env env, double v) {
  napi_value out;
  napi_create_double(env, v, &out);
  return out;
}
/* V8's external-memory counter: napi_adjust_external_memory returns the new total. */
static napi_value reported(napi_env env, napi_callback_info info) {
  int64_t total = 0;
  (void)info;
  napi_adjust_external_memory(env, 0, &total);
  return num(env, (double)total);
}
/* Bytes glibc has handed out and not had back (all arenas, plus mmapped chunks). */
static napi_value inuse(napi_env env, napi_callback_info info) {
  struct mallinfo2 mi = mallinfo2();
  (void)info;
  return num(env, (double)mi.uordblks + (double)mi.hblkhd);
}
/* Free bytes glibc keeps in its arenas. */
static napi_value heldfree(napi_env env, napi_callback_info info) {
  struct mallinfo2 mi = mallinfo2();
  (void)info;
  return num(env, (double)mi.fordblks);
}
static napi_value trim(napi_env env, napi_callback_info info) {
  (void)info;
  return num(env, malloc_trim(0));
}
/* mallopt(M_MMAP_THRESHOLD, 1 MiB): pins glibc's threshold (it is dynamic until set). */
static napi_value pin(napi_env env, napi_callback_info info) {
  (void)info;
  return num(env, mallopt(M_MMAP_THRESHOLD, 1 << 20));
}
static void def(napi_env env, napi_value exports, const char* name, napi_callback cb) {
  napi_value f;
  napi_create_function(env, name, (size_t)-1, cb, NULL, &f);
  napi_set_named_property(env, exports, name, f);
}
napi_value napi_register_module_v1(napi_env env, napi_value exports) {
  def(env, exports, "reported", reported);
  def(env, exports, "inuse", inuse);
  def(env, exports, "heldfree", heldfree);
  def(env, exports, "trim", trim);
  def(env, exports, "pinMmapThreshold", pin);
  return exports;
}
