# -*- coding: utf-8 -*-
# erni-deploy: show a warning from a playbook ("[WARNING]: ..."), which ansible.builtin has
# no action for. The notify role uses it for messages that could not be delivered: a chat
# outage must be visible without failing the deployment.

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec={"msg": {"type": "str", "required": True}})
        display.warning(args["msg"])
        result.update(changed=False, msg=args["msg"])
        return result
