#include "kiln/master/experiment_spec.h"

// Being written (issue 3).
