/* saved_model_loader_check: run a SavedModel's signatures in TensorFlow's Session loader.
 *
 * This is the loader TF Serving uses (tensorflow::LoadSavedModel, reached here through the C
 * API's TF_LoadSessionFromSavedModel with tag "serve"); no Python is involved. The program
 * reads the signature defs from the loaded MetaGraphDef itself (a minimal protobuf reader
 * below), so the tensors it feeds and fetches are the ones a server would resolve.
 *
 * Build (the headers and libraries ship in the TensorFlow pip wheel; see
 * tests/export/loader_check.py, which builds and runs it):
 *
 *   gcc -std=c11 -O1 -Wall -I "$TF/include" tools/saved_model_loader_check.c \
 *       "$TF/libtensorflow_cc.so.2" "$TF/libtensorflow_framework.so.2" \
 *       -Wl,-rpath,"$TF" -o saved_model_loader_check
 *
 * Usage:
 *
 *   saved_model_loader_check SAVED_MODEL_DIR OUT_DIR REQUEST_FILE...
 *
 * Each REQUEST_FILE is one request: a header line
 *
 *   <signature_key> <input_key> <string|uint8|float32|int32> <rank> <dim_0> ... <dim_rank-1>
 *
 * followed by the payload: for uint8 / float32 / int32 the raw little-endian elements in
 * row-major order; for string, per element "<byte length>\n" then the bytes. All requests run
 * in one session, in order, so a failed request followed by a good one shows that the
 * process keeps serving.
 *
 * Output (stdout, one line each):
 *
 *   loaded <dir> tags=serve signatures=<n>
 *   signature <key> method=<method> inputs: <key>=<tensor> <dtype> ... outputs: <key>=<tensor> ...
 *   request <i> <signature_key> OK ms=<wall-clock milliseconds of TF_SessionRun>
 *   output <i> <output_key> <dtype> [d0,d1,...] <OUT_DIR>/<i>_<output_key>.bin first=<v0>,<v1>,...
 *   request <i> <signature_key> ERROR <TF_Code name> <message, newlines shown as " | ">
 *
 * Each .bin file holds the output tensor's raw elements (float32 / int32 / int64 / uint8).
 * Exit status: 0 when the model loaded and every request was read (requests may fail; that is
 * reported per request), 1 on a load failure or a malformed request file, 2 on usage errors.
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tensorflow/c/c_api.h"
#include "tensorflow/c/tf_tstring.h"

#define MAX_TENSORS 32
#define MAX_SIGNATURES 32
#define MAX_RANK 8

/* ------------------------------------------------------------------ minimal protobuf reader */

typedef struct {
  const uint8_t *p, *end;
} Reader;

static int read_varint(Reader *r, uint64_t *value) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64 && r->p < r->end; shift += 7) {
    uint8_t byte = *r->p++;
    v |= (uint64_t)(byte & 0x7f) << shift;
    if (!(byte & 0x80)) {
      *value = v;
      return 1;
    }
  }
  return 0;
}

/* Next field of a message: its number and wire type; for length-delimited fields `sub` is
 * the payload, for varints `value` the number. Returns 0 at the end, -1 on malformed input. */
static int next_field(Reader *r, uint32_t *field, uint32_t *wire, uint64_t *value, Reader *sub) {
  uint64_t tag, len;
  if (r->p >= r->end) return 0;
  if (!read_varint(r, &tag)) return -1;
  *field = (uint32_t)(tag >> 3);
  *wire = (uint32_t)(tag & 7);
  switch (*wire) {
    case 0:
      return read_varint(r, value) ? 1 : -1;
    case 1:
      if (r->end - r->p < 8) return -1;
      r->p += 8;
      return 1;
    case 2:
      if (!read_varint(r, &len) || (uint64_t)(r->end - r->p) < len) return -1;
      sub->p = r->p;
      sub->end = r->p + len;
      r->p += len;
      return 1;
    case 5:
      if (r->end - r->p < 4) return -1;
      r->p += 4;
      return 1;
    default:
      return -1; /* groups are not used by MetaGraphDef */
  }
}

static char *dup_bytes(Reader b) {
  size_t n = (size_t)(b.end - b.p);
  char *s = malloc(n + 1);
  memcpy(s, b.p, n);
  s[n] = 0;
  return s;
}

typedef struct {
  char *key;    /* signature input/output key, e.g. "images" */
  char *tensor; /* graph tensor name, e.g. "serving_default_images:0" */
  int dtype;    /* TF_DataType */
} TensorInfo;

typedef struct {
  char *key;
  char *method;
  TensorInfo inputs[MAX_TENSORS], outputs[MAX_TENSORS];
  int num_inputs, num_outputs;
} Signature;

/* TensorInfo {1: name, 2: dtype, ...} inside a map entry {1: key, 2: value}. */
static int parse_tensor_entry(Reader entry, TensorInfo *info) {
  uint32_t f, w;
  uint64_t v;
  Reader sub;
  int rc;
  memset(info, 0, sizeof *info);
  while ((rc = next_field(&entry, &f, &w, &v, &sub)) > 0) {
    if (f == 1 && w == 2) {
      info->key = dup_bytes(sub);
    } else if (f == 2 && w == 2) {
      uint32_t f2, w2;
      uint64_t v2;
      Reader sub2;
      int rc2;
      while ((rc2 = next_field(&sub, &f2, &w2, &v2, &sub2)) > 0) {
        if (f2 == 1 && w2 == 2) info->tensor = dup_bytes(sub2);
        if (f2 == 2 && w2 == 0) info->dtype = (int)v2;
      }
      if (rc2 < 0) return -1;
    }
  }
  return (rc < 0 || !info->key || !info->tensor) ? -1 : 0;
}

/* MetaGraphDef field 5: map<string, SignatureDef>; SignatureDef {1: inputs, 2: outputs,
 * 3: method_name}. */
static int parse_signatures(const TF_Buffer *meta_graph, Signature *sigs, int max_sigs) {
  Reader r = {meta_graph->data, (const uint8_t *)meta_graph->data + meta_graph->length};
  uint32_t f, w;
  uint64_t v;
  Reader entry;
  int rc, n = 0;
  while ((rc = next_field(&r, &f, &w, &v, &entry)) > 0) {
    if (f != 5 || w != 2) continue;
    if (n == max_sigs) return -1;
    Signature *s = &sigs[n++];
    memset(s, 0, sizeof *s);
    uint32_t f2, w2;
    uint64_t v2;
    Reader sub;
    int rc2;
    while ((rc2 = next_field(&entry, &f2, &w2, &v2, &sub)) > 0) {
      if (f2 == 1 && w2 == 2) {
        s->key = dup_bytes(sub);
      } else if (f2 == 2 && w2 == 2) {
        uint32_t f3, w3;
        uint64_t v3;
        Reader sub3;
        int rc3;
        while ((rc3 = next_field(&sub, &f3, &w3, &v3, &sub3)) > 0) {
          if (f3 == 1 && w3 == 2) {
            if (s->num_inputs == MAX_TENSORS) return -1;
            if (parse_tensor_entry(sub3, &s->inputs[s->num_inputs++]) < 0) return -1;
          } else if (f3 == 2 && w3 == 2) {
            if (s->num_outputs == MAX_TENSORS) return -1;
            if (parse_tensor_entry(sub3, &s->outputs[s->num_outputs++]) < 0) return -1;
          } else if (f3 == 3 && w3 == 2) {
            s->method = dup_bytes(sub3);
          }
        }
        if (rc3 < 0) return -1;
      }
    }
    if (rc2 < 0 || !s->key) return -1;
  }
  return rc < 0 ? -1 : n;
}

/* ------------------------------------------------------------------------------ helpers */

static const char *dtype_name(int dtype) {
  switch (dtype) {
    case TF_FLOAT: return "float32";
    case TF_INT32: return "int32";
    case TF_UINT8: return "uint8";
    case TF_STRING: return "string";
    case TF_INT64: return "int64";
    default: return "other";
  }
}

static const char *code_name(TF_Code code) {
  static const char *names[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
                                "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                                "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                                "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                                "UNAUTHENTICATED"};
  return (code >= 0 && code <= 16) ? names[code] : "UNKNOWN_CODE";
}

static void print_message(const char *message) {
  for (const char *c = message; *c; ++c) {
    if (*c == '\n') fputs(" | ", stdout);
    else putchar(*c);
  }
  putchar('\n');
}

/* "op_name:index" → the graph operation and output index. */
static int resolve(TF_Graph *graph, const char *tensor_name, TF_Output *out) {
  char op_name[1024];
  const char *colon = strrchr(tensor_name, ':');
  size_t n = colon ? (size_t)(colon - tensor_name) : strlen(tensor_name);
  if (n >= sizeof op_name) return -1;
  memcpy(op_name, tensor_name, n);
  op_name[n] = 0;
  out->oper = TF_GraphOperationByName(graph, op_name);
  out->index = colon ? atoi(colon + 1) : 0;
  return out->oper ? 0 : -1;
}

static const Signature *find_signature(const Signature *sigs, int n, const char *key) {
  for (int i = 0; i < n; ++i)
    if (strcmp(sigs[i].key, key) == 0) return &sigs[i];
  return NULL;
}

/* One request file → the input tensor, or NULL (message on stderr). */
static TF_Tensor *read_request(const char *path, char *signature, char *input_key) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "%s: cannot open\n", path);
    return NULL;
  }
  char dtype[16];
  int rank;
  int64_t dims[MAX_RANK];
  int64_t count = 1;
  TF_Tensor *tensor = NULL;
  if (fscanf(f, "%255s %255s %15s %d", signature, input_key, dtype, &rank) != 4 || rank < 0 ||
      rank > MAX_RANK) {
    fprintf(stderr, "%s: bad header\n", path);
    goto done;
  }
  for (int d = 0; d < rank; ++d) {
    long long dim;
    if (fscanf(f, "%lld", &dim) != 1 || dim < 0) {
      fprintf(stderr, "%s: bad dimension %d\n", path, d);
      goto done;
    }
    dims[d] = dim;
    count *= dim;
  }
  if (fgetc(f) != '\n') {
    fprintf(stderr, "%s: header must end with a newline\n", path);
    goto done;
  }
  if (strcmp(dtype, "string") == 0) {
    tensor = TF_AllocateTensor(TF_STRING, dims, rank, (size_t)count * sizeof(TF_TString));
    TF_TString *elements = TF_TensorData(tensor);
    for (int64_t i = 0; i < count; ++i) {
      long long len;
      TF_StringInit(&elements[i]);
      if (fscanf(f, "%lld", &len) != 1 || len < 0 || fgetc(f) != '\n') {
        fprintf(stderr, "%s: element %lld: bad length line\n", path, (long long)i);
        goto fail;
      }
      char *bytes = malloc((size_t)len + 1);
      if (fread(bytes, 1, (size_t)len, f) != (size_t)len) {
        fprintf(stderr, "%s: element %lld: payload shorter than %lld bytes\n", path,
                (long long)i, len);
        free(bytes);
        goto fail;
      }
      TF_StringCopy(&elements[i], bytes, (size_t)len);
      free(bytes);
    }
  } else {
    TF_DataType type;
    size_t size;
    if (strcmp(dtype, "uint8") == 0) type = TF_UINT8, size = 1;
    else if (strcmp(dtype, "float32") == 0) type = TF_FLOAT, size = 4;
    else if (strcmp(dtype, "int32") == 0) type = TF_INT32, size = 4;
    else {
      fprintf(stderr, "%s: unsupported dtype %s\n", path, dtype);
      goto done;
    }
    tensor = TF_AllocateTensor(type, dims, rank, (size_t)count * size);
    if (count && fread(TF_TensorData(tensor), size, (size_t)count, f) != (size_t)count) {
      fprintf(stderr, "%s: payload shorter than %lld elements\n", path, (long long)count);
      goto fail;
    }
  }
  goto done;
fail:
  TF_DeleteTensor(tensor);
  tensor = NULL;
done:
  fclose(f);
  return tensor;
}

static void write_output(int request, const char *key, TF_Tensor *t, const char *out_dir) {
  int dtype = TF_TensorType(t);
  printf("output %d %s %s [", request, key, dtype_name(dtype));
  int64_t count = 1;
  for (int d = 0; d < TF_NumDims(t); ++d) {
    printf(d ? ",%lld" : "%lld", (long long)TF_Dim(t, d));
    count *= TF_Dim(t, d);
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/%d_%s.bin", out_dir, request, key);
  FILE *f = fopen(path, "wb");
  if (f) {
    fwrite(TF_TensorData(t), 1, TF_TensorByteSize(t), f);
    fclose(f);
  }
  printf("] %s first=", f ? path : "(not written)");
  int64_t shown = count < 6 ? count : 6;
  for (int64_t i = 0; i < shown; ++i) {
    const char *sep = i ? "," : "";
    if (dtype == TF_FLOAT) printf("%s%.6g", sep, ((const float *)TF_TensorData(t))[i]);
    else if (dtype == TF_INT32) printf("%s%d", sep, ((const int32_t *)TF_TensorData(t))[i]);
    else if (dtype == TF_INT64)
      printf("%s%lld", sep, (long long)((const int64_t *)TF_TensorData(t))[i]);
    else if (dtype == TF_UINT8) printf("%s%u", sep, ((const uint8_t *)TF_TensorData(t))[i]);
  }
  printf("\n");
}

/* ---------------------------------------------------------------------------------- main */

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s SAVED_MODEL_DIR OUT_DIR REQUEST_FILE...\n", argv[0]);
    return 2;
  }
  const char *export_dir = argv[1], *out_dir = argv[2];
  TF_Status *status = TF_NewStatus();
  TF_Graph *graph = TF_NewGraph();
  TF_SessionOptions *options = TF_NewSessionOptions();
  TF_Buffer *meta_graph = TF_NewBuffer();
  const char *tags[] = {"serve"};
  TF_Session *session = TF_LoadSessionFromSavedModel(options, NULL, export_dir, tags, 1, graph,
                                                     meta_graph, status);
  if (TF_GetCode(status) != TF_OK) {
    printf("load ERROR %s ", code_name(TF_GetCode(status)));
    print_message(TF_Message(status));
    return 1;
  }
  static Signature sigs[MAX_SIGNATURES];
  int num_sigs = parse_signatures(meta_graph, sigs, MAX_SIGNATURES);
  if (num_sigs < 0) {
    printf("load ERROR could not parse the MetaGraphDef's signature defs\n");
    return 1;
  }
  printf("loaded %s tags=serve signatures=%d\n", export_dir, num_sigs);
  for (int i = 0; i < num_sigs; ++i) {
    printf("signature %s method=%s inputs:", sigs[i].key, sigs[i].method ? sigs[i].method : "");
    for (int j = 0; j < sigs[i].num_inputs; ++j)
      printf(" %s=%s %s", sigs[i].inputs[j].key, sigs[i].inputs[j].tensor,
             dtype_name(sigs[i].inputs[j].dtype));
    printf(" outputs:");
    for (int j = 0; j < sigs[i].num_outputs; ++j)
      printf(" %s=%s %s", sigs[i].outputs[j].key, sigs[i].outputs[j].tensor,
             dtype_name(sigs[i].outputs[j].dtype));
    printf("\n");
  }
  fflush(stdout);

  for (int r = 3; r < argc; ++r) {
    int request = r - 3;
    char signature_key[256], input_key[256];
    TF_Tensor *input = read_request(argv[r], signature_key, input_key);
    if (!input) return 1;
    const Signature *sig = find_signature(sigs, num_sigs, signature_key);
    const TensorInfo *in_info = NULL;
    for (int j = 0; sig && j < sig->num_inputs; ++j)
      if (strcmp(sig->inputs[j].key, input_key) == 0) in_info = &sig->inputs[j];
    if (!sig || !in_info || sig->num_inputs != 1) {
      fprintf(stderr, "%s: signature %s has no single input %s\n", argv[r], signature_key,
              input_key);
      return 1;
    }
    TF_Output feed, fetch[MAX_TENSORS];
    TF_Tensor *results[MAX_TENSORS] = {0};
    if (resolve(graph, in_info->tensor, &feed) < 0) {
      fprintf(stderr, "signature %s: input tensor %s is not in the graph\n", sig->key,
              in_info->tensor);
      return 1;
    }
    for (int j = 0; j < sig->num_outputs; ++j) {
      if (resolve(graph, sig->outputs[j].tensor, &fetch[j]) < 0) {
        fprintf(stderr, "signature %s: output tensor %s is not in the graph\n", sig->key,
                sig->outputs[j].tensor);
        return 1;
      }
    }
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    TF_SessionRun(session, NULL, &feed, &input, 1, fetch, results, sig->num_outputs, NULL, 0,
                  NULL, status);
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ms = (end.tv_sec - start.tv_sec) * 1e3 + (end.tv_nsec - start.tv_nsec) * 1e-6;
    if (TF_GetCode(status) == TF_OK) {
      printf("request %d %s OK ms=%.3f\n", request, sig->key, ms);
      for (int j = 0; j < sig->num_outputs; ++j) {
        write_output(request, sig->outputs[j].key, results[j], out_dir);
        TF_DeleteTensor(results[j]);
      }
    } else {
      printf("request %d %s ERROR %s ", request, sig->key, code_name(TF_GetCode(status)));
      print_message(TF_Message(status));
    }
    fflush(stdout);
    TF_DeleteTensor(input);
  }
  TF_CloseSession(session, status);
  TF_DeleteSession(session, status);
  TF_DeleteBuffer(meta_graph);
  TF_DeleteSessionOptions(options);
  TF_DeleteGraph(graph);
  TF_DeleteStatus(status);
  return 0;
}
