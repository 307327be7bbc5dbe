"""Settings for a worker process a test starts: the test settings, on the test database the test created
(its name is known only at run time) rather than the development database the settings name."""

import os

from semart_site.settings.test import *  # noqa: F403
from semart_site.settings.test import DATABASES

DATABASES["default"]["NAME"] = os.environ["SEMART_TEST_DATABASE"]
