/* Checkpoint directories: written whole or not at all, verified on load.
 *
 *   RUN/checkpoint-STEP/
 *       <files the trainer adds>      weights, optimizer moments, state.json ...
 *       manifest.json                 {"format": "whet-checkpoint", "version": 1, "step": STEP,
 *                                      "files": [{"name", "bytes", "xxh64"}]}  (written last)
 *
 * Files are written into RUN/.checkpoint-STEP.tmp (each one atomically:
 * temporary file, fsync, rename), the directory is fsynced, renamed to
 * checkpoint-STEP, and RUN is fsynced. Only then are older checkpoints beyond
 * the last K removed, so a write error or a full disk leaves every earlier
 * checkpoint as it was (the temporary directory is removed). A checkpoint
 * loads only when every file of its manifest has its size and xxHash64.
 * Directories starting with '.' (a write cut short by kill -9) are ignored,
 * and cleared by the next write. */
#ifndef WHET_TRAIN_CHECKPOINT_H
#define WHET_TRAIN_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "util/file.h"

#define WHET_CKPT_MAX_FILES 16

typedef struct whet_ckpt_file {
    char name[64];
    uint64_t bytes, xxh64;
} whet_ckpt_file;

typedef struct whet_ckpt_writer {
    char run_dir[1024], tmp_dir[1100], final_dir[1100];
    uint64_t step;
    whet_ckpt_file files[WHET_CKPT_MAX_FILES];
    size_t n_files;
} whet_ckpt_writer;

/* Starts RUN/.checkpoint-STEP.tmp (removing a stale one). */
int whet_ckpt_begin(whet_ckpt_writer *w, const char *run_dir, uint64_t step, whet_err *e);
/* Adds a safetensors file (whet_st_write) / a file of bytes. */
int whet_ckpt_add_safetensors(whet_ckpt_writer *w, const char *name, const whet_st_entry *tensors, size_t count,
                              whet_err *e);
int whet_ckpt_add_file(whet_ckpt_writer *w, const char *name, const void *data, size_t size, whet_err *e);
/* Adds a file something else wrote into w->tmp_dir (it must be complete
 * and synced, as the atomic writers leave it). */
int whet_ckpt_add_existing(whet_ckpt_writer *w, const char *name, whet_err *e);
/* Writes the manifest, moves the directory into place, then keeps only the
 * last `keep` checkpoints (0: all). */
int whet_ckpt_commit(whet_ckpt_writer *w, size_t keep, whet_err *e);
/* Keeps the last `keep` checkpoints of run_dir (0: all) and also the one of
 * step `also_keep` (UINT64_MAX: none): the rest are removed. */
int whet_ckpt_rotate(const char *run_dir, size_t keep, uint64_t also_keep, whet_err *e);
/* Removes the temporary directory. */
void whet_ckpt_abort(whet_ckpt_writer *w);

/* Checks dir's manifest and every file it lists; *step gets its step. */
int whet_ckpt_verify(const char *dir, uint64_t *step, whet_err *e);

/* The checkpoint-STEP directories of run_dir, by increasing step (malloc'd
 * array of steps; *count of them). */
int whet_ckpt_list(const char *run_dir, uint64_t **steps, size_t *count, whet_err *e);

/* The newest checkpoint of run_dir that verifies, into path; a newer one
 * that does not verify is reported through warn (may be NULL) and skipped.
 * Fails when there is none. */
int whet_ckpt_latest(const char *run_dir, char *path, size_t size, uint64_t *step,
                     void (*warn)(const char *msg), whet_err *e);

/* Removes a directory holding only files (a checkpoint). */
int whet_remove_flat_dir(const char *dir);

#endif
