/*
 * gguf_logits — llama.cpp's own logits and tokenisations for a GGUF file.
 *
 * A reference tool for reference/gguf_goldens.py (which produces tests/golden_gguf/). It is
 * not part of the Rust build and CI neither builds nor runs it. Build it with
 * reference/build_gguf_logits.sh (needs a built llama.cpp: libllama.so + headers).
 *
 * Usage:
 *   gguf_logits MODEL.gguf [--tokens "1,2,3;4,5,6"] [--texts FILE]
 *
 *   --tokens  sequences separated by ';', token ids by ','. Each sequence is decoded in ONE
 *             batch (positions 0..n-1, sequence id 0, logits requested at every position) into
 *             an empty memory (the KV cache is cleared before every sequence).
 *   --texts   FILE holds one text per line; inside a line the escapes \n, \t, \r and \\ stand
 *             for newline, tab, carriage return and backslash. Every text is tokenised with
 *             llama_tokenize(add_special = false, parse_special = false).
 *
 * Output (stdout, one record per line, fields separated by one space):
 *   vocab N                                   first line: llama_vocab_n_tokens
 *   logits S P v_0 v_1 ... v_{N-1}            sequence S, position P; floats printed with %.9g
 *                                             (round-trips f32 exactly)
 *   tokens T K id_0 ... id_{K-1}              text T gives K token ids
 * llama.cpp's own log goes to stderr (silenced unless GGUF_LOGITS_VERBOSE is set).
 *
 * Determinism: CPU only (n_gpu_layers 0), one thread, flash attention off, no weight
 * repacking (use_extra_bufts false), one sequence per context, and an f32 KV cache (llama.cpp's
 * default f16 cache would round k and v, ~1e-3 on these logits).
 */
#include "llama.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_verbose = 0;

static void quiet_log(enum ggml_log_level level, const char * text, void * user) {
    (void) user;
    if (g_verbose || level == GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

static void die(const char * msg) {
    fprintf(stderr, "gguf_logits: %s\n", msg);
    exit(1);
}

/* Decodes one sequence and prints its logits. */
static void run_sequence(struct llama_context * ctx, int n_vocab, int seq_index,
                         const llama_token * ids, int n) {
    llama_memory_clear(llama_get_memory(ctx), true);
    struct llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        batch.token[i] = ids[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    int rc = llama_decode(ctx, batch);
    if (rc != 0) {
        fprintf(stderr, "gguf_logits: llama_decode returned %d\n", rc);
        exit(1);
    }
    for (int i = 0; i < n; i++) {
        const float * row = llama_get_logits_ith(ctx, i);
        if (row == NULL) {
            die("no logits");
        }
        printf("logits %d %d", seq_index, i);
        for (int v = 0; v < n_vocab; v++) {
            printf(" %.9g", (double) row[v]);
        }
        putchar('\n');
    }
    llama_batch_free(batch);
}

/* Parses "1,2,3;4,5" and runs every sequence in turn. */
static void run_token_arg(struct llama_context * ctx, int n_vocab, const char * arg) {
    char * copy = strdup(arg);
    int seq_index = 0;
    char * save_seq = NULL;
    for (char * seq = strtok_r(copy, ";", &save_seq); seq != NULL; seq = strtok_r(NULL, ";", &save_seq)) {
        llama_token ids[4096];
        int n = 0;
        char * save_id = NULL;
        for (char * tok = strtok_r(seq, ",", &save_id); tok != NULL; tok = strtok_r(NULL, ",", &save_id)) {
            if (n == 4096) {
                die("sequence longer than 4096");
            }
            char * end = NULL;
            long v = strtol(tok, &end, 10);
            if (end == tok || *end != '\0' || v < 0 || v >= n_vocab) {
                die("bad token id");
            }
            ids[n++] = (llama_token) v;
        }
        if (n == 0) {
            die("empty sequence");
        }
        run_sequence(ctx, n_vocab, seq_index++, ids, n);
    }
    free(copy);
}

/* Undoes the \n \t \r \\ escapes in place. */
static void unescape(char * s) {
    char * w = s;
    for (char * r = s; *r; r++) {
        if (*r == '\\' && r[1] != '\0') {
            r++;
            switch (*r) {
                case 'n': *w++ = '\n'; break;
                case 't': *w++ = '\t'; break;
                case 'r': *w++ = '\r'; break;
                case '\\': *w++ = '\\'; break;
                default: die("unknown escape in texts file");
            }
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

static void run_texts(const struct llama_vocab * vocab, const char * path) {
    FILE * f = fopen(path, "rb");
    if (f == NULL) {
        die("cannot open texts file");
    }
    char * line = NULL;
    size_t cap = 0;
    ssize_t len;
    int index = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        if (len > 0 && line[len - 1] == '\n') {
            line[len - 1] = '\0';
        }
        unescape(line);
        int32_t text_len = (int32_t) strlen(line);
        int32_t max = text_len + 16;
        llama_token * ids = malloc(sizeof(llama_token) * (size_t) max);
        int32_t k = llama_tokenize(vocab, line, text_len, ids, max, false, false);
        if (k < 0) {
            max = -k;
            ids = realloc(ids, sizeof(llama_token) * (size_t) max);
            k = llama_tokenize(vocab, line, text_len, ids, max, false, false);
        }
        if (k < 0) {
            die("llama_tokenize failed");
        }
        printf("tokens %d %d", index++, k);
        for (int32_t i = 0; i < k; i++) {
            printf(" %d", ids[i]);
        }
        putchar('\n');
        free(ids);
    }
    free(line);
    fclose(f);
}

int main(int argc, char ** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [--tokens \"1,2;3,4\"] [--texts FILE]\n", argv[0]);
        return 2;
    }
    g_verbose = getenv("GGUF_LOGITS_VERBOSE") != NULL;
    llama_log_set(quiet_log, NULL);
    llama_backend_init();

    const char * tokens_arg = NULL;
    const char * texts_path = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc) {
            tokens_arg = argv[++i];
        } else if (strcmp(argv[i], "--texts") == 0 && i + 1 < argc) {
            texts_path = argv[++i];
        } else {
            fprintf(stderr, "gguf_logits: unknown argument %s\n", argv[i]);
            return 2;
        }
    }

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.use_extra_bufts = false;
    struct llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (model == NULL) {
        die("cannot load model");
    }
    const struct llama_vocab * vocab = llama_model_get_vocab(model);
    int n_vocab = llama_vocab_n_tokens(vocab);
    printf("vocab %d\n", n_vocab);

    if (tokens_arg != NULL) {
        struct llama_context_params cp = llama_context_default_params();
        cp.n_ctx = 512;
        cp.n_batch = 512;
        cp.n_ubatch = 512;
        cp.n_seq_max = 1;
        cp.n_threads = 1;
        cp.n_threads_batch = 1;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        cp.offload_kqv = false;
        cp.op_offload = false;
        cp.no_perf = true;
        cp.type_k = GGML_TYPE_F32; /* an f32 KV cache: the default f16 one rounds k and v */
        cp.type_v = GGML_TYPE_F32;
        struct llama_context * ctx = llama_init_from_model(model, cp);
        if (ctx == NULL) {
            die("cannot create context");
        }
        run_token_arg(ctx, n_vocab, tokens_arg);
        llama_free(ctx);
    }
    if (texts_path != NULL) {
        run_texts(vocab, texts_path);
    }
    fflush(stdout);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
