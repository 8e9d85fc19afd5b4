name = "Hummel demo mod";
author = "Hummel";
