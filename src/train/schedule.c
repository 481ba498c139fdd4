#include "train/schedule.h"

#include <math.h>
#include <string.h>

static const char *const names[] = {"constant", "linear", "cosine"};

const char *whet_lr_schedule_name(whet_lr_schedule kind)
{
    return (unsigned)kind < sizeof names / sizeof names[0] ? names[kind] : "?";
}

int whet_lr_schedule_from_name(const char *name)
{
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0)
            return (int)i;
    return -1;
}

double whet_schedule_lr(const whet_schedule *s, size_t step)
{
    size_t W = s->warmup_steps, S = s->total_steps;
    if (step < W)
        return s->lr * (double)step / (double)(W > 1 ? W : 1);
    double factor = 1.0;
    double span = S > W ? (double)(S - W) : 1.0;
    switch (s->kind) {
    case WHET_LR_CONSTANT:
        return s->lr;
    case WHET_LR_LINEAR:
        factor = S > step ? (double)(S - step) / span : 0.0;
        break;
    case WHET_LR_COSINE: {
        double progress = (double)(step - W) / span;
        factor = 0.5 * (1.0 + cos(M_PI * progress));
        break;
    }
    }
    if (factor < 0)
        factor = 0;
    return s->min_lr + (s->lr - s->min_lr) * factor;
}
