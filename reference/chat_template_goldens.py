"""Golden renderings pinning `moe_data::chat::ChatTemplate` to transformers' chat-template renderer.

Writes `tests/chat_templates/cases.json`: for each (template, conversation, options) the text that
`transformers.utils.chat_template_utils.render_jinja_template` produces (transformers 5.23.0, jinja2
with trim_blocks, lstrip_blocks and loop controls). The templates are small ones written for this
test in the styles checkpoints use: role markers, a system-prompt split with `namespace`, Python
string methods, `raise_exception`, `tojson`, `loop` variables and `bos_token`. Run from the
repository root:

    /root/refvenv/bin/python reference/chat_template_goldens.py
"""

import json
import os

from transformers.utils.chat_template_utils import render_jinja_template

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "chat_templates", "cases.json")

MARKERS = (
    "{% for message in messages %}\n"
    "    {{ '<|start|>' + message['role'] + '\\n' + message['content'] | trim + '<|end|>' + '\\n' }}\n"
    "{% endfor %}\n"
    "{% if add_generation_prompt %}\n"
    "    {{ '<|start|>assistant\\n' }}\n"
    "{% endif %}\n"
)

SYSTEM_SPLIT = (
    "{{ bos_token }}\n"
    "{%- set ns = namespace(system='', turns=0) -%}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- set ns.system = messages[0]['content'].strip() -%}\n"
    "    {%- set messages = messages[1:] -%}\n"
    "{%- endif -%}\n"
    "{%- for message in messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{- raise_exception('roles must alternate user/assistant') -}}\n"
    "    {%- endif -%}\n"
    "    {%- if message['role'] == 'user' -%}\n"
    "        {%- set ns.turns = ns.turns + 1 -%}\n"
    "        [Q{{ ns.turns }}]{% if loop.first and ns.system %} ({{ ns.system|upper }}){% endif %} {{ message['content'] }}\n"
    "    {%- elif message['content'].startswith('!') -%}\n"
    "        {{ ' [A] ' + message['content'][1:] + eos_token }}\n"
    "    {%- else -%}\n"
    "        {{ ' [A] ' + message['content'] + eos_token }}\n"
    "    {%- endif -%}\n"
    "    {%- if loop.last and add_generation_prompt %} [A]{% endif -%}\n"
    "{%- endfor -%}\n"
)

JSONISH = (
    "{% for m in messages %}{{ loop.index }}:{{ m | tojson }}{% if not loop.last %},{% endif %}{% endfor %}\n"
    "{% if tools is not none %}tools{% endif %}{% if add_generation_prompt %}>>{% endif %}"
)

CASES = [
    ("markers", MARKERS, [("user", "  hello there  "), ("assistant", "hi"), ("user", "how are you?")], True),
    ("markers_no_prompt", MARKERS, [("system", "be brief"), ("user", "x")], False),
    ("system_split", SYSTEM_SPLIT, [("system", "  Stay calm. "), ("user", "one"), ("assistant", "!two"), ("user", "three")], True),
    ("system_split_no_system", SYSTEM_SPLIT, [("user", "only")], False),
    ("jsonish", JSONISH, [("user", 'quote " and \\ and é')], True),
]


def main():
    out = []
    for name, template, conv, gen in CASES:
        messages = [{"role": r, "content": c} for r, c in conv]
        text = render_jinja_template([messages], chat_template=template, add_generation_prompt=gen,
                                     bos_token="<s>", eos_token="</s>")[0][0]
        out.append({"name": name, "template": template, "messages": messages, "add_generation_prompt": gen,
                    "bos_token": "<s>", "eos_token": "</s>", "expected": text})
    # a conversation the template refuses
    try:
        render_jinja_template([[{"role": "assistant", "content": "x"}]], chat_template=SYSTEM_SPLIT,
                              bos_token="<s>", eos_token="</s>")
        raise SystemExit("expected an exception")
    except Exception as e:  # jinja2 TemplateError raised by raise_exception
        out.append({"name": "raises", "template": SYSTEM_SPLIT, "messages": [{"role": "assistant", "content": "x"}],
                    "add_generation_prompt": False, "bos_token": "<s>", "eos_token": "</s>", "error": str(e)})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=2, ensure_ascii=False)
        f.write("\n")
    for c in out:
        print(c["name"], repr(c.get("expected", c.get("error"))))


if __name__ == "__main__":
    main()
