"""SessionConfigurer.bounds_its_statements: who gets the checkout's watchdog.

The stock configurer sends its statements with their own deadline, so a checkout
arms no watchdog around it; a subclass's ``conn.execute`` has none, so a subclass
is watched unless it declares otherwise itself (inheriting True would let an
override hang a checkout over a half-open link).
"""

from __future__ import annotations

from plain_pool.configuration import SessionConfigurer


def test_the_stock_configurer_bounds_its_own_statements():
    assert SessionConfigurer.bounds_its_statements is True


def test_a_subclass_is_watched_unless_it_says_otherwise():
    class Override(SessionConfigurer):
        pass

    class Declared(SessionConfigurer):
        bounds_its_statements = True

    class BelowDeclared(Declared):
        pass

    assert Override.bounds_its_statements is False
    assert Declared.bounds_its_statements is True
    assert BelowDeclared.bounds_its_statements is False
