"""Actions: agents declare the actions they may take; a session has a state and the actions its agent proposed;
messages keep OpenAI's tool calls.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 19:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('actions', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('tool_choice', sa.String(length=16), server_default='auto', nullable=False))
    with op.batch_alter_table('chat_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state', sa.String(length=32), server_default='idle', nullable=False))
    with op.batch_alter_table('chat_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tool_calls', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('tool_call_id', sa.String(length=64), nullable=True))
    op.create_table('session_actions',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('session_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('arguments', sa.JSON(), nullable=False),
    sa.Column('tool_call_id', sa.String(length=64), nullable=True),
    sa.Column('proposed_by', sa.String(length=64), nullable=True),
    sa.Column('model', sa.String(length=100), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('decided_by', sa.String(length=64), nullable=True),
    sa.Column('proposed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['session_id'], ['chat_sessions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('session_actions', schema=None) as batch_op:
        batch_op.create_index('ix_session_actions_session_status', ['session_id', 'status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('session_actions', schema=None) as batch_op:
        batch_op.drop_index('ix_session_actions_session_status')
    op.drop_table('session_actions')
    with op.batch_alter_table('chat_messages', schema=None) as batch_op:
        batch_op.drop_column('tool_call_id')
        batch_op.drop_column('tool_calls')
    with op.batch_alter_table('chat_sessions', schema=None) as batch_op:
        batch_op.drop_column('state')
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_column('tool_choice')
        batch_op.drop_column('actions')
