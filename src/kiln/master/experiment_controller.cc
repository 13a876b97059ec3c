#include "kiln/master/experiment_controller.h"

// Being written (issue 3).
